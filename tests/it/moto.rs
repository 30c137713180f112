//! A real S3 API for tests: moto's server on a free loopback port, killed on drop.
//! `scripts/test.sh` installs it into `.venv`; `LOYALSCORE_MOTO_SERVER` may point elsewhere.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::aws::AmazonS3Builder;

use crate::support::free_port;
use object_store::{path::Path, ObjectStore, RetryConfig};

pub struct Moto {
    child: Child,
    pub port: u16,
}

pub const BUCKET: &str = "loyalscore-test";

impl Moto {
    pub fn start() -> Moto {
        let bin = std::env::var("LOYALSCORE_MOTO_SERVER").unwrap_or_else(|_| {
            concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/moto_server").to_string()
        });
        assert!(
            std::path::Path::new(&bin).exists(),
            "moto_server not found at {bin}: run ./scripts/test.sh, which installs it into .venv"
        );
        let port = free_port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                // An unsigned PUT on the bucket path creates the bucket.
                let req = format!(
                    "PUT /{BUCKET} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                if s.write_all(req.as_bytes()).is_ok() {
                    let mut resp = String::new();
                    let _ = s.read_to_string(&mut resp);
                    if resp.starts_with("HTTP/1.1 200") || resp.starts_with("HTTP/1.0 200") {
                        return moto;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not come up on port {port}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An object_store client for the test bucket.
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        Arc::new(
            AmazonS3Builder::new()
                .with_endpoint(self.endpoint())
                .with_allow_http(true)
                .with_virtual_hosted_style_request(false)
                .with_region("us-east-1")
                .with_bucket_name(BUCKET)
                .with_access_key_id("test")
                .with_secret_access_key("test")
                .with_retry(RetryConfig {
                    max_retries: 1,
                    ..Default::default()
                })
                .build()
                .unwrap(),
        )
    }

    pub fn prefix() -> Path {
        Path::from("team-a/models")
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
