//! The generated gRPC code for `proto/loyalscore/v1` and the KServe V2 inference protocol
//! (`proto/inference`), shared by the server and the CLI clients.

#![allow(clippy::all, missing_docs)]

pub mod v1 {
    tonic::include_proto!("loyalscore.v1");
}

/// KServe V2 / Open Inference Protocol (the subset loyalscore speaks).
pub mod inference {
    tonic::include_proto!("inference");
}

/// The codec of every service here: prost's, except that a large message is decoded with
/// the runtime told this thread blocks.
pub mod codec {
    use std::marker::PhantomData;

    use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
    use tonic::Status;
    use tonic_prost::{ProstDecoder, ProstEncoder};

    /// Above this many bytes a message's decoding is long enough (about 60 ms for 16 MB of
    /// histories) to hold up every task queued behind it on the same runtime thread: a
    /// victim's Score waited that long beside clients sending 16 MB batches.
    pub const LARGE_MESSAGE: usize = 1 << 20;

    #[derive(Debug, Clone)]
    pub struct LargeMessageCodec<T, U>(PhantomData<(T, U)>);

    impl<T, U> Default for LargeMessageCodec<T, U> {
        fn default() -> Self {
            Self(PhantomData)
        }
    }

    impl<T, U> Codec for LargeMessageCodec<T, U>
    where
        T: prost::Message + Send + 'static,
        U: prost::Message + Default + Send + 'static,
    {
        type Encode = T;
        type Decode = U;
        type Encoder = ProstEncoder<T>;
        type Decoder = LargeMessageDecoder<U>;

        fn encoder(&mut self) -> Self::Encoder {
            ProstEncoder::new(BufferSettings::default())
        }

        fn decoder(&mut self) -> Self::Decoder {
            LargeMessageDecoder(ProstDecoder::new(BufferSettings::default()))
        }
    }

    /// prost says INTERNAL for bytes that are no message (garbage, invalid UTF-8 in a
    /// string): the sender's mistake, so INVALID_ARGUMENT, which a client does not retry.
    fn not_a_message(s: Status) -> Status {
        if s.code() == tonic::Code::Internal {
            Status::invalid_argument(format!("message does not decode: {}", s.message()))
        } else {
            s
        }
    }

    #[derive(Debug)]
    pub struct LargeMessageDecoder<U>(ProstDecoder<U>);

    impl<U: prost::Message + Default> Decoder for LargeMessageDecoder<U> {
        type Item = U;
        type Error = Status;

        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
            use bytes::Buf;
            // block_in_place hands this worker's other tasks to another thread for the length
            // of the decode; it exists on the multi-threaded runtime only (the servers'; a
            // current-thread runtime, as some clients use, decodes in place).
            let multi = tokio::runtime::Handle::try_current()
                .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
            let r = if multi && src.remaining() > LARGE_MESSAGE {
                tokio::task::block_in_place(|| self.0.decode(src))
            } else {
                self.0.decode(src)
            };
            r.map_err(not_a_message)
        }

        fn buffer_settings(&self) -> BufferSettings {
            self.0.buffer_settings()
        }
    }
}

/// The encoded descriptors of every message and service, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("loyalscore_descriptor");
