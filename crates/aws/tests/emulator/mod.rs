//! Real S3/DynamoDB-compatible servers on 127.0.0.1 for the adapter tests:
//! ministack and moto, from the project's venv (`scripts/test` installs
//! them, pinned). Each test starts its own server and kills it on drop.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region};
use aws_sdk_dynamodb::types::{AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType};

pub struct Server {
    child: Child,
    pub url: String,
    pub rt: tokio::runtime::Runtime,
    pub config: aws_config::SdkConfig,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn venv_bin(name: &str) -> PathBuf {
    let venv = std::env::var_os("FANFOLD_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv"));
    let bin = venv.join("bin").join(name);
    assert!(
        bin.exists(),
        "{} is missing: run scripts/test, which installs the AWS emulators into .venv",
        bin.display()
    );
    bin
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Ministack,
    Moto,
}

pub fn start(kind: Kind) -> Server {
    let port = free_port();
    let tmp = std::env::temp_dir().join(format!("fanfold-emu-{port}"));
    std::fs::create_dir_all(&tmp).unwrap();
    let mut cmd = match kind {
        Kind::Ministack => {
            let mut c = Command::new(venv_bin("ministack"));
            c.env("BIND_HOST", "127.0.0.1")
                .env("GATEWAY_PORT", port.to_string())
                .env("MINISTACK_REGION", "us-east-1")
                .env("TMPDIR", &tmp);
            c
        }
        Kind::Moto => {
            let mut c = Command::new(venv_bin("moto_server"));
            c.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
            c
        }
    };
    let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start the emulator");
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{kind:?} did not start on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let config = rt.block_on(
        aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(&url)
            .region(Region::new("us-east-1"))
            .credentials_provider(aws_sdk_s3::config::Credentials::new("test", "test", None, None, "static"))
            .load(),
    );
    Server { child, url, rt, config }
}

impl Server {
    pub fn create_bucket(&self, name: &str) {
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&self.config).force_path_style(true).build(),
        );
        self.rt.block_on(s3.create_bucket().bucket(name).send()).unwrap();
    }

    pub fn create_table(&self, name: &str) {
        let ddb = aws_sdk_dynamodb::Client::new(&self.config);
        let attr = |n: &str| {
            AttributeDefinition::builder().attribute_name(n).attribute_type(ScalarAttributeType::S).build().unwrap()
        };
        let key = |n: &str, t| KeySchemaElement::builder().attribute_name(n).key_type(t).build().unwrap();
        self.rt
            .block_on(
                ddb.create_table()
                    .table_name(name)
                    .attribute_definitions(attr("pk"))
                    .attribute_definitions(attr("sk"))
                    .key_schema(key("pk", KeyType::Hash))
                    .key_schema(key("sk", KeyType::Range))
                    .billing_mode(BillingMode::PayPerRequest)
                    .send(),
            )
            .unwrap();
    }
}
