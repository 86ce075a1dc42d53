//! Successful answers read from their body by the collector, where the SDK's reading is costly.
//!
//! The SDK reads an answer into an output with a string of its own for every member of every
//! entry. For the two calls made per few hundred events (PutRecords and ReceiveMessage) that
//! was about a tenth of the collector's work at its ceiling (`docs/performance.md`), for members
//! the collector never looks at. So for one call an interceptor puts a deserializer in front of
//! the SDK's: a successful answer it can read goes, read, into the call's [`AnswerSlot`], and
//! the SDK is handed an empty output; an error answer, or one it cannot read, goes to the SDK's
//! own deserializer as before.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{BeforeSerializationInterceptorContextRef, Error, Output};
use aws_smithy_runtime_api::client::orchestrator::{HttpResponse, OrchestratorError};
use aws_smithy_runtime_api::client::ser_de::{DeserializeResponse, SharedResponseDeserializer};
use aws_smithy_types::config_bag::{ConfigBag, FrozenLayer};

/// How the collector reads one operation's successful answers.
pub(crate) trait OwnReading: 'static {
    /// What an answer is read into.
    type Read: Send + 'static;

    /// The operation's own configuration, which holds the SDK's deserializer (made once).
    fn operation_layer() -> Option<&'static FrozenLayer>;

    /// Reads a successful answer's body; `None` leaves the answer to the SDK.
    fn read(body: &[u8]) -> Option<Self::Read>;

    /// The SDK's output handed back for an answer read here: empty.
    fn empty_output() -> Option<Output>;
}

/// Where one call's answer is left when it was read here.
pub(crate) struct AnswerSlot<R: OwnReading>(Arc<Mutex<Option<R::Read>>>);

impl<R: OwnReading> Default for AnswerSlot<R> {
    fn default() -> Self {
        AnswerSlot(Arc::new(Mutex::new(None)))
    }
}

impl<R: OwnReading> Clone for AnswerSlot<R> {
    fn clone(&self) -> Self {
        AnswerSlot(self.0.clone())
    }
}

impl<R: OwnReading> fmt::Debug for AnswerSlot<R> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("AnswerSlot")
    }
}

impl<R: OwnReading> AnswerSlot<R> {
    /// The interceptor that has the call's successful answer read into this slot.
    pub(crate) fn reader(&self) -> impl Intercept + 'static {
        AnswerReader::<R>(self.clone())
    }

    /// The answer, if it was a success read here.
    pub(crate) fn take(&self) -> Option<R::Read> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    fn put(&self, read: R::Read) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(read);
    }
}

/// Puts the call's deserializer in front of the SDK's.
struct AnswerReader<R: OwnReading>(AnswerSlot<R>);

impl<R: OwnReading> fmt::Debug for AnswerReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("AnswerReader")
    }
}

impl<R: OwnReading> Intercept for AnswerReader<R> {
    fn name(&self) -> &'static str {
        "AnswerReader"
    }

    fn read_before_execution(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // The interceptors' layer sits above the operation's, so this deserializer is the one
        // the call loads.
        cfg.interceptor_state()
            .store_put(SharedResponseDeserializer::new(AnswerDeserializer::<R>(self.0.clone())));
        Ok(())
    }
}

struct AnswerDeserializer<R: OwnReading>(AnswerSlot<R>);

impl<R: OwnReading> fmt::Debug for AnswerDeserializer<R> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("AnswerDeserializer")
    }
}

impl<R: OwnReading> DeserializeResponse for AnswerDeserializer<R> {
    fn deserialize_nonstreaming_with_config(
        &self,
        response: &HttpResponse,
        cfg: &ConfigBag,
    ) -> Result<Output, OrchestratorError<Error>> {
        if response.status().is_success()
            && let Some(body) = response.body().bytes()
            && let Some(read) = R::read(body)
            && let Some(output) = R::empty_output()
        {
            self.0.put(read);
            return Ok(output);
        }
        match R::operation_layer().and_then(|layer| layer.load::<SharedResponseDeserializer>()) {
            Some(sdk) => sdk.deserialize_nonstreaming_with_config(response, cfg),
            None => Err(OrchestratorError::other(
                "the SDK's deserializer of the operation is missing",
            )),
        }
    }
}
