//! The client's tests against real replica files: the engine and the file worker on tokio's
//! paused clock, the outbox upgrade, the push queue read in batches, and the client-side
//! resolvers.

mod engine;
mod files;
mod outbox;
mod queue;
mod resolvers;
