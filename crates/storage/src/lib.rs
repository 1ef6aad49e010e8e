//! The untrusted storage server: fixed-size ciphertext buckets in sled, served over TCP.
//!
//! The server never sees a key or plaintext. It keeps stores (a geometry and the hash of a
//! capability) and their buckets, and runs one data operation, the batch: an ordered list of
//! bucket reads and writes, applied atomically and made durable (group commit) before it is
//! acknowledged. See `shroud_proto` for the protocol.
//!
//! ```no_run
//! # async fn f() -> std::io::Result<()> {
//! use shroud_storage::{Config, Server};
//! use shroud_net::transport::ServerTls;
//! let tls = ServerTls::from_pem_files("cert.pem".as_ref(), "key.pem".as_ref()).expect("tls");
//! // The database and the routing key live in one directory, made on first start.
//! let server = Server::open("/tmp/db".as_ref(), Config::default(), tls, None).expect("open");
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! server.run(listener, std::future::pending()).await
//! # }
//! ```
//!
//! # Security
//! The server learns what it stores and serves: store ids, geometries, which buckets each
//! batch reads and writes, sizes and timing (exactly what the transcript records). It cannot
//! read buckets (sealed by the client) and its lies are caught by the client's integrity
//! checks. Capabilities protect stores from other clients; the server keeps only their hashes.

pub mod admission;
pub mod backend;
mod batch;
pub mod board;
pub mod capability;
mod commit;
pub mod delivery;
pub mod keys;
pub mod new_stores;
mod redis_backend;
mod server;
mod sled_backend;
mod stats;
pub mod transcript;

pub use admission::MAX_BUCKET_LEN;
pub use backend::{Backend, BackendError, Fetch, Put, StoreMeta, Usage, Want};
pub use new_stores::NewStores;
pub use redis_backend::{ClusterError, RedisBackend, RedisOptions};
pub use server::{Config, Server};
pub use sled_backend::SledBackend;
pub use transcript::{Entry, Op, Transcript};
