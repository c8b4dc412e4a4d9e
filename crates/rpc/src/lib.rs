//! The worker protocol, generated from `proto/bellows/worker/v1/worker.proto`.
//!
//! Server and worker share these types so the wire format has one source.

#![allow(missing_docs, unused_qualifications, clippy::all, clippy::pedantic)]

/// Version 1 of the worker protocol.
pub mod v1 {
    tonic::include_proto!("bellows.worker.v1");
}

pub use v1::worker_client::WorkerClient;
pub use v1::worker_server::{Worker, WorkerServer};

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Where the codec's buffers start: tonic's default is 8 KiB. A server keeps
/// one encoder buffer per connected worker for as long as its stream lasts
/// (all of a rack's machines during a boot storm: 7 KiB less each is 70 MB
/// less at 10,000), and the protocol's messages are mostly far smaller; a
/// larger one grows its buffer as it needs.
const CODEC_BUFFER_BYTES: usize = 1024;
/// Bytes encoded before a response stream yields to the runtime (tonic's
/// default).
const CODEC_YIELD_BYTES: usize = 32 * 1024;

/// The worker protocol's codec: prost's encoding, with small starting
/// buffers (1 KiB instead of 8). Named by the generated client and
/// server through `codec_path` in `build.rs`.
#[derive(Debug)]
pub struct WorkerCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for WorkerCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for WorkerCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(CODEC_BUFFER_BYTES, CODEC_YIELD_BYTES)
}
