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

impl Server {
    /// A Python function that writes each event it gets to a file in `dir`,
    /// named after the function (the far side of the dispatcher's contract
    /// test; the emulator runs it as a local process).
    pub fn create_recorder_function(&self, name: &str, dir: &std::path::Path) {
        use aws_sdk_lambda::types::{Environment, FunctionCode, Runtime};
        let src = r#"
import json, os, uuid

def handler(event, context):
    d = os.environ["RECORD_DIR"]
    p = os.path.join(d, os.environ["AWS_LAMBDA_FUNCTION_NAME"] + "." + uuid.uuid4().hex)
    with open(p + ".tmp", "w") as f:
        json.dump(event, f)
    os.rename(p + ".tmp", p + ".json")
    return {"ok": True}
"#;
        let zip = std::env::temp_dir().join(format!("fanfold-recorder-{}-{name}.zip", std::process::id()));
        let made = Command::new("python3")
            .args(["-c", "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1], 'w'); z.writestr('recorder.py', sys.argv[2]); z.close()"])
            .arg(&zip)
            .arg(src)
            .status()
            .expect("python3 makes the function's zip");
        assert!(made.success());
        let code = std::fs::read(&zip).unwrap();
        let _ = std::fs::remove_file(&zip);
        let lambda = aws_sdk_lambda::Client::new(&self.config);
        let env = Environment::builder().variables("RECORD_DIR", dir.to_string_lossy()).build();
        self.rt
            .block_on(
                lambda
                    .create_function()
                    .function_name(name)
                    .runtime(Runtime::Python312)
                    .role("arn:aws:iam::000000000000:role/recorder")
                    .handler("recorder.handler")
                    .code(FunctionCode::builder().zip_file(aws_sdk_lambda::primitives::Blob::new(code)).build())
                    .environment(env)
                    .timeout(30)
                    .send(),
            )
            .unwrap_or_else(|e| panic!("create function {name}: {e:?}"));
    }
}
