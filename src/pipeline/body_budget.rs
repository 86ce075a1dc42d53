//! The body budget: raw message bodies received and not yet decoded stay within it.
//!
//! A receive cannot know its bodies' sizes before they arrive. Reserving the largest body the
//! queue accepts for every message asked for, for the whole round trip, kept a 16 MiB budget to
//! 16 messages in the air when the queue takes 1 MiB messages, so throughput fell with the round
//! trip. So a receive reserves in two steps instead:
//!
//! - before its call, a small *ticket* per message asked for ([`TICKET_BYTES_PER_MESSAGE`]), so
//!   that receiving pauses while the budget is full;
//! - when the answer's headers arrive, before its body is read, what the answer takes: its
//!   `Content-Length` (the worst case of the messages asked for when it has none). The
//!   ReceiveMessage calls' HTTP client does this ([`ReceiveHttpClient`]), for the ticket of the
//!   call being made ([`Ticket::during`]), and leaves the reservation where the receiver finds
//!   it after the call.
//!
//! A receive asks for no more of the queue's largest bodies than the whole budget holds, so the
//! budget is never exceeded (but for an answer whose JSON escaping makes it larger than all of
//! it, which takes all of it). The price: a receive whose answer is larger than its ticket may
//! wait for room with its answer pending, within the call's attempt timeout. That happens only
//! when the bodies are large and the pipeline behind is full; if the wait outlasts the timeout,
//! the call fails and its messages come back after their visibility timeout.

use std::sync::{Arc, Mutex, PoisonError};

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// What a receive reserves before its call, per message asked for (or the queue's largest
/// body, when smaller). Large enough that a receive's answer of typical submissions fits in
/// its ticket, small enough that every receiver's ticket fits in the default budget.
pub(crate) const TICKET_BYTES_PER_MESSAGE: usize = 32 * 1024;

/// The budget of raw bodies received and not yet decoded.
#[derive(Clone, Debug)]
pub(crate) struct BodyBudget {
    room: Arc<Semaphore>,
    /// The whole budget: the most one answer can take.
    total: usize,
    /// The largest body the queue accepts: an answer without a `Content-Length` reserves this
    /// per message asked for.
    max_body: usize,
}

impl BodyBudget {
    pub(crate) fn new(total: usize, max_body: usize) -> BodyBudget {
        let total = total.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        BodyBudget {
            room: Arc::new(Semaphore::new(total)),
            total,
            max_body: max_body.clamp(1, total),
        }
    }

    /// Waits for the ticket of the next receive, asking for as many messages as fit, at least
    /// one and at most `batch_size`: as many tickets as are free, and no more of the queue's
    /// largest bodies than the whole budget holds, so that no answer can outgrow it. `None` when
    /// shutdown came first.
    pub(crate) async fn ticket(&self, batch_size: usize, shutdown: &CancellationToken) -> Option<Ticket> {
        let per_message = TICKET_BYTES_PER_MESSAGE.min(self.max_body);
        let fits = (self.room.available_permits() / per_message).min(self.total / self.max_body);
        let asked = fits.clamp(1, batch_size.max(1));
        let ticket = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return None,
            ticket = self.room.clone().acquire_many_owned(self.permits(asked * per_message)) => ticket.ok()?,
        };
        Some(Ticket {
            asked,
            held: Arc::new(Mutex::new(Some(ticket))),
            budget: self.clone(),
        })
    }

    /// `bytes` as semaphore permits: at most the whole budget.
    fn permits(&self, bytes: usize) -> u32 {
        bytes.clamp(1, self.total) as u32
    }
}

/// One receive's share of the body budget: its ticket until the answer's headers arrive, then
/// what the answer takes.
pub(crate) struct Ticket {
    asked: usize,
    held: Arc<Mutex<Option<OwnedSemaphorePermit>>>,
    budget: BodyBudget,
}

impl Ticket {
    /// How many messages the receive asks for.
    pub(crate) fn asked(&self) -> usize {
        self.asked
    }

    /// Makes `call`, a ReceiveMessage call through a [`ReceiveHttpClient`], reserve its
    /// answer's size with this ticket when the answer's headers arrive.
    pub(crate) async fn during<F: Future>(&self, call: F) -> F::Output {
        let reserving = Reserving {
            held: self.held.clone(),
            budget: self.budget.clone(),
            worst_case: self.asked.saturating_mul(self.budget.max_body),
        };
        CALL_RESERVATION.scope(reserving, call).await
    }

    /// After the call: what it holds of the budget (the answer's reservation, or the ticket
    /// when no answer came), to be shared among the bodies.
    pub(crate) fn into_room(self) -> Option<OwnedSemaphorePermit> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

tokio::task_local! {
    /// The reservation of the ReceiveMessage call the task is making. Task-local because the
    /// SDK's client, and so its HTTP client, is made once, while the ticket changes with every
    /// call; the SDK calls the HTTP connector from the task that awaits the call.
    static CALL_RESERVATION: Reserving;
}

/// The HTTP client of the ReceiveMessage calls (see the module's comment): `inner`, reserving
/// each answer's size in the body budget for the ticket of its call.
#[derive(Clone, Debug)]
pub(crate) struct ReceiveHttpClient {
    inner: SharedHttpClient,
}

impl ReceiveHttpClient {
    pub(crate) fn new(inner: SharedHttpClient) -> ReceiveHttpClient {
        ReceiveHttpClient { inner }
    }
}

impl HttpClient for ReceiveHttpClient {
    fn http_connector(&self, settings: &HttpConnectorSettings, components: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(ReservingConnector {
            inner: self.inner.http_connector(settings, components),
        })
    }
}

#[derive(Debug)]
struct ReservingConnector {
    inner: SharedHttpConnector,
}

impl HttpConnector for ReservingConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        // A call made outside `Ticket::during` reserves nothing: its ticket stays what it holds.
        let reserving = CALL_RESERVATION.try_with(Reserving::clone).ok();
        let call = self.inner.call(request);
        HttpConnectorFuture::new(async move {
            let response = call.await?;
            if let Some(reserving) = reserving {
                let size = response
                    .headers()
                    .get("content-length")
                    .and_then(|length| length.parse::<usize>().ok())
                    .unwrap_or(reserving.worst_case);
                reserving.reserve(size).await;
            }
            Ok(response)
        })
    }
}

/// One ReceiveMessage call's share of the budget, as its HTTP connector sees it.
#[derive(Clone, Debug)]
struct Reserving {
    held: Arc<Mutex<Option<OwnedSemaphorePermit>>>,
    budget: BodyBudget,
    worst_case: usize,
}

impl Reserving {
    /// Turns the ticket into a reservation of `size` bytes: the surplus goes back; what is
    /// missing is taken at once if free, or else the ticket is given up and the whole waited
    /// for, so that receives waiting for more cannot hold the budget between them.
    async fn reserve(&self, size: usize) {
        let need = self.budget.permits(size) as usize;
        let ticket = self.held.lock().unwrap_or_else(PoisonError::into_inner).take();
        let room = match ticket {
            Some(mut ticket) if ticket.num_permits() >= need => {
                drop(ticket.split(ticket.num_permits() - need));
                Some(ticket)
            }
            Some(mut ticket) => {
                let missing = self.budget.permits(need - ticket.num_permits());
                match self.budget.room.clone().try_acquire_many_owned(missing) {
                    Ok(more) => {
                        ticket.merge(more);
                        Some(ticket)
                    }
                    Err(_) => {
                        drop(ticket);
                        self.budget.room.clone().acquire_many_owned(need as u32).await.ok()
                    }
                }
            }
            None => self.budget.room.clone().acquire_many_owned(need as u32).await.ok(),
        };
        *self.held.lock().unwrap_or_else(PoisonError::into_inner) = room;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;

    use super::*;

    const KIB: usize = 1024;

    /// Answers every call with a body of `length` bytes, saying so in `Content-Length` or not.
    #[derive(Debug)]
    struct Answers {
        length: usize,
        says_length: bool,
    }

    impl HttpConnector for Answers {
        fn call(&self, _: HttpRequest) -> HttpConnectorFuture {
            let mut response = HttpResponse::new(
                StatusCode::try_from(200).unwrap(),
                SdkBody::from(vec![b'x'; self.length]),
            );
            if self.says_length {
                response.headers_mut().insert("content-length", self.length.to_string());
            }
            HttpConnectorFuture::ready(Ok(response))
        }
    }

    /// One receive's ticket in [`budget`]: four messages' worth.
    const TICKET: usize = 4 * TICKET_BYTES_PER_MESSAGE;

    /// A budget of four tickets for a queue whose largest body is a ticket: a receive asks for
    /// four messages (the whole budget's worth of the largest bodies).
    fn budget() -> BodyBudget {
        BodyBudget::new(4 * TICKET, TICKET)
    }

    async fn ticket(budget: &BodyBudget) -> Ticket {
        budget.ticket(10, &CancellationToken::new()).await.unwrap()
    }

    /// One call through the receive HTTP client, for `ticket`, to a server answering `length`
    /// bytes.
    async fn call(ticket: &Ticket, length: usize, says_length: bool) {
        let connector = ReservingConnector {
            inner: SharedHttpConnector::new(Answers { length, says_length }),
        };
        // The connector is called within the call's future, as the SDK calls it.
        ticket
            .during(async { connector.call(HttpRequest::empty()).await })
            .await
            .unwrap();
    }

    fn held(ticket: Ticket) -> usize {
        ticket.into_room().map_or(0, |room| room.num_permits())
    }

    #[tokio::test]
    async fn a_receive_asks_for_no_more_of_the_largest_bodies_than_the_whole_budget_holds() {
        let budget = budget();
        let first = ticket(&budget).await;
        assert_eq!(first.asked(), 4);
        assert_eq!(budget.room.available_permits(), 3 * TICKET);
        let small = BodyBudget::new(1024 * KIB, 8 * KIB);
        assert_eq!(ticket(&small).await.asked(), 10, "at most the batch size");
    }

    #[tokio::test]
    async fn an_answer_smaller_than_its_ticket_keeps_its_length_and_gives_the_rest_back() {
        let budget = budget();
        let ticket = ticket(&budget).await;
        call(&ticket, 10 * KIB, true).await;
        assert_eq!(budget.room.available_permits(), 4 * TICKET - 10 * KIB);
        assert_eq!(held(ticket), 10 * KIB);
    }

    #[tokio::test]
    async fn an_answer_larger_than_its_ticket_takes_what_is_missing_when_it_is_free() {
        let budget = budget();
        let ticket = ticket(&budget).await;
        call(&ticket, 3 * TICKET, true).await;
        assert_eq!(budget.room.available_permits(), TICKET);
        assert_eq!(held(ticket), 3 * TICKET);
    }

    #[tokio::test]
    async fn a_call_made_outside_its_tickets_scope_reserves_nothing_and_the_ticket_stays_whole() {
        let budget = budget();
        let ticket = ticket(&budget).await;
        let connector = ReservingConnector {
            inner: SharedHttpConnector::new(Answers {
                length: 3 * TICKET,
                says_length: true,
            }),
        };
        connector.call(HttpRequest::empty()).await.unwrap();
        assert_eq!(budget.room.available_permits(), 3 * TICKET);
        assert_eq!(held(ticket), TICKET);
    }

    #[tokio::test]
    async fn an_answer_without_a_length_reserves_the_largest_bodies_asked_for() {
        let budget = budget();
        let ticket = ticket(&budget).await;
        call(&ticket, 10 * KIB, false).await;
        assert_eq!(held(ticket), 4 * TICKET, "four of the queue's largest bodies");
    }

    #[tokio::test]
    async fn an_answer_larger_than_the_whole_budget_takes_all_of_it() {
        let budget = budget();
        let ticket = ticket(&budget).await;
        call(&ticket, 5 * TICKET, true).await;
        assert_eq!(held(ticket), 4 * TICKET);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_that_does_not_fit_waits_without_its_ticket_so_that_waiting_answers_cannot_hold_the_budget() {
        let budget = budget();
        let [first, second, third, fourth] = [
            ticket(&budget).await,
            ticket(&budget).await,
            ticket(&budget).await,
            ticket(&budget).await,
        ];
        assert_eq!(budget.room.available_permits(), 0);
        // Each answer is larger than its ticket and nothing is free: both give their tickets
        // up and wait, the first in line for 2.5 tickets, the second for 2.
        let first_answer = tokio::spawn(async move {
            call(&first, 5 * TICKET / 2, true).await;
            first
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
        let second_answer = tokio::spawn(async move {
            call(&second, 2 * TICKET, true).await;
            second
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(!first_answer.is_finished() && !second_answer.is_finished());

        // A third receive's answer of a tenth of a ticket gives back the rest of it: with the
        // two tickets given up, the first answer fits (had they kept them, it could not).
        call(&third, TICKET / 10, true).await;
        let first = first_answer.await.unwrap();
        assert_eq!(held(first), 5 * TICKET / 2, "and gives it back");
        assert!(!second_answer.is_finished(), "two tickets are not free yet");
        drop(fourth.into_room());
        assert_eq!(held(second_answer.await.unwrap()), 2 * TICKET);
        assert_eq!(held(third), TICKET / 10);
    }
}
