//! `[recording] storage = "s3://bucket/prefix"` against a real S3-compatible server (s3s-fs):
//! the gateway binary records calls through its local spool into the bucket, and the CLI reads,
//! verifies, decrypts and erases them there.
//!
//! * a recorded call's object appears in the bucket, byte for byte the sealed container the
//!   database's SHA-256 names, and the spool is emptied; with the spool empty, `recording
//!   verify` and `decrypt` read the bucket (audio checked by correlation); a damaged object is
//!   reported as damaged; a subject access export renders it; `erase` deletes the object;
//! * SIGKILL mid-call leaves the recording in the spool; the next start marks it truncated and
//!   uploads it, and `verify` reports the truncation from the bucket; once its retention has
//!   passed, `sweep` deletes the object;
//! * with the server away the recording stays in the spool (and is readable there); once the
//!   server is back the uploader's retry moves it;
//! * a multipart upload (the path of long calls) against the real server.

mod common;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use callgate::config::S3Config;
use callgate::ids::RecordingId;
use callgate::recording::storage::s3::{S3Credentials, S3Storage};
use callgate::store::Store;
use common::audio;
use common::phone::{AgentAnswer, AgentPhone};
use common::process::{GatewayProc, cli_with_env};
use common::s3::{self as s3t, BUCKET, S3Server, aws_env, wait_for};
use common::{CALLER_NUMBER, GatewayEnv, GatewayOpts, finished_call, only_call, talk};
use sha2::Digest;
use tokio::time::sleep;

const TEST_LIMIT: Duration = Duration::from_secs(90);
const PREFIX: &str = "site-1/rec";

async fn bounded<F: Future<Output = ()>>(f: F) {
    if tokio::time::timeout(TEST_LIMIT, f).await.is_err() {
        panic!("test exceeded {TEST_LIMIT:?}");
    }
}

/// The shared test config with the recording section pointed at the bucket.
fn s3_config(
    env: &GatewayEnv,
    rtp_ports: (u16, u16),
    target: &str,
    endpoint: &str,
) -> std::path::PathBuf {
    let text = env.config_text(&GatewayOpts {
        rtp_ports,
        target,
        trusted: &["127.0.0.0/8"],
    });
    let dir_line = format!("storage = \"{}\"", env.storage.display());
    assert!(
        text.contains(&dir_line),
        "the shared config names the storage directory"
    );
    let text = text.replace(
        &dir_line,
        &format!(
            "storage = \"s3://{BUCKET}/{PREFIX}\"\nspool = \"{}\"\ns3_endpoint = \"{endpoint}\"\nupload_retry = \"1s\"",
            spool(env).display()
        ),
    );
    let path = env.dir.path().join("callgate.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

fn spool(env: &GatewayEnv) -> std::path::PathBuf {
    env.dir.path().join("spool")
}

fn spool_files(env: &GatewayEnv) -> Vec<String> {
    match std::fs::read_dir(spool(env)) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn object_key(rec: &str) -> String {
    format!("{PREFIX}/{rec}.cgrec")
}

/// One test's gateway set-up: its files, the agent phone, the S3 port and the config file.
struct Rig {
    env: GatewayEnv,
    agent: AgentPhone,
    port: u16,
    cfg: std::path::PathBuf,
}

async fn rig(rtp_ports: (u16, u16)) -> Rig {
    let env = GatewayEnv::new(&audio::announcement_at(16_000, 0.5));
    let port = s3t::free_port();
    let agent = AgentPhone::start(AgentAnswer::After(Duration::from_millis(100))).await;
    let endpoint = format!("http://127.0.0.1:{port}");
    let cfg = s3_config(&env, rtp_ports, &agent.uri(), &endpoint);
    Rig {
        env,
        agent,
        port,
        cfg,
    }
}

impl Rig {
    fn server(&self, bin: &Path) -> S3Server {
        S3Server::start(bin, &self.env.dir.path().join("s3"), self.port)
    }
    async fn gateway(&self) -> GatewayProc {
        GatewayProc::start_with_env(&self.cfg, &aws_env()).await
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `callgate recording verify` with the S3 credentials: (exit 0, stdout, stderr).
async fn verify(cfg: &Path, rec: &str) -> (bool, String, String) {
    let (ok, out, err) = cli_with_env(cfg, &["recording", "verify", rec], &aws_env()).await;
    (ok, text(&out), text(&err))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_call_goes_to_the_bucket_and_is_verified_decrypted_and_erased_there() {
    let Some(bin) = s3t::s3fs_binary("storage_s3") else {
        return;
    };
    bounded(async {
        let r = rig((43_000, 43_099)).await;
        let (env, agent, cfg) = (&r.env, &r.agent, &r.cfg);
        let server = r.server(&bin);
        let gw = r.gateway().await;
        let (a, b, _caller) = talk(gw.sip_addr, agent, 2.0, true).await;

        // The row turns final at hangup; the upload follows.
        let call = finished_call(env).await;
        let rec = call.recording_id.clone().expect("recording id").to_string();
        let object = server.object_file(&object_key(&rec));
        wait_for(
            Duration::from_secs(10),
            "the object in the bucket and the spool emptied",
            || object.is_file() && spool_files(env).is_empty(),
        )
        .await;
        let (_, stderr) = gw.stop().await;

        // The object is the sealed container the database vouches for.
        let store = Store::connect(&env.db_url).await.expect("database");
        let row = store
            .get_recording(&RecordingId::from_string(&rec))
            .await
            .unwrap()
            .expect("row");
        store.close().await;
        assert_eq!(row.location, format!("s3://{BUCKET}/{}", object_key(&rec)));
        let bytes = std::fs::read(&object).expect("object file");
        let sha: String = sha2::Sha256::digest(&bytes)
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect();
        assert_eq!(
            row.sha256.as_deref(),
            Some(sha.as_str()),
            "object bytes = the sealed file"
        );
        assert_eq!(row.bytes as usize, bytes.len());
        assert!(
            !text(&stderr).contains(s3t::SECRET_KEY),
            "the secret key never reaches the log"
        );

        // Readers, with nothing left in the spool: everything comes from the bucket.
        assert!(spool_files(env).is_empty());
        let env_vars = aws_env();
        let (okv, out, err) = verify(cfg, &rec).await;
        assert!(okv && out.contains("ok ("), "verify: {out} {err}");
        let wav = env.dir.path().join("call.wav");
        let wav_s = wav.display().to_string();
        let (okd, out, err) = cli_with_env(
            cfg,
            &["recording", "decrypt", &rec, "--out", &wav_s],
            &env_vars,
        )
        .await;
        assert!(okd, "decrypt: {} {}", text(&out), text(&err));
        audio::assert_stereo_holds(&wav, &a, &b);
        let (_, left, _) = audio::read_stereo_wav(&wav);

        // One flipped byte in the stored object: reported, not played.
        let mut damaged = bytes.clone();
        let mid = damaged.len() / 2;
        damaged[mid] ^= 0x40;
        std::fs::write(&object, &damaged).expect("damage the object");
        let (okv, out, err) = verify(cfg, &rec).await;
        assert!(
            !okv && out.contains("damaged"),
            "verify of a damaged object: {out} {err}"
        );
        std::fs::write(&object, &bytes).expect("restore the object");

        // Subject access renders the same audio from the bucket.
        let sar_dir = env.dir.path().join("sar");
        let sar_s = sar_dir.display().to_string();
        let (oks, out, err) = cli_with_env(
            cfg,
            &[
                "--role",
                "dpo",
                "sar",
                "--number",
                CALLER_NUMBER,
                "--out",
                &sar_s,
            ],
            &env_vars,
        )
        .await;
        assert!(oks, "sar: {} {}", text(&out), text(&err));
        let sar_wav = sar_dir.join(format!("{}.wav", call.call_id));
        let (_, sar_left, _) = audio::read_stereo_wav(&sar_wav);
        assert_eq!(
            sar_left, left,
            "the subject access copy is the decrypted recording"
        );

        // Erasure deletes the object.
        let (oke, out, err) = cli_with_env(
            cfg,
            &[
                "--role",
                "dpo",
                "erase",
                &rec,
                "--reason",
                "erasure request (test)",
            ],
            &env_vars,
        )
        .await;
        assert!(oke, "erase: {} {}", text(&out), text(&err));
        assert!(!object.exists(), "the object is gone from the bucket");
        let (okv, out, err) = verify(cfg, &rec).await;
        assert!(!okv, "verify after erasure must fail: {out} {err}");
        server.stop();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_crash_the_next_start_uploads_the_truncated_recording() {
    let Some(bin) = s3t::s3fs_binary("storage_s3") else {
        return;
    };
    bounded(async {
        let r = rig((43_100, 43_199)).await;
        let (env, agent, cfg) = (&r.env, &r.agent, &r.cfg);
        let server = r.server(&bin);
        let gw = r.gateway().await;
        let (_a, _b, _caller) = talk(gw.sip_addr, agent, 2.5, false).await;
        gw.kill();

        let in_spool = spool_files(env);
        assert_eq!(
            in_spool.len(),
            1,
            "the interrupted recording is in the spool: {in_spool:?}"
        );
        let rec = in_spool[0].trim_end_matches(".cgrec").to_string();
        let object = server.object_file(&object_key(&rec));
        assert!(
            !object.exists(),
            "nothing was uploaded while the call lasted"
        );

        let gw = r.gateway().await;
        wait_for(
            Duration::from_secs(10),
            "the restart uploads the spool file",
            || object.is_file() && spool_files(env).is_empty(),
        )
        .await;
        gw.stop().await;
        let call = only_call(env).await;
        assert_eq!(call.recording_state, "truncated", "{call:?}");

        let (okv, out, err) = verify(cfg, &rec).await;
        assert!(
            !okv && out.contains("truncated after"),
            "verify: {out} {err}"
        );
        let chunks: u32 = out
            .split("truncated after ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("chunk count in {out:?}"));
        assert!(
            chunks >= 2,
            "about 2.5 s of sealed audio at 1 s flushes: {chunks} chunks"
        );

        // 200 days on, past the default 183: the sweeper shreds the key and deletes the object.
        let later = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_millis()
            + 200 * 86_400_000;
        let later = later.to_string();
        let mut sweep_env = aws_env().to_vec();
        sweep_env.push(("CALLGATE_NOW_MS", later.as_str()));
        let (oks, out, err) = cli_with_env(cfg, &["sweep"], &sweep_env).await;
        assert!(oks, "sweep: {} {}", text(&out), text(&err));
        assert!(
            !object.exists(),
            "the sweeper deleted the object: {}",
            text(&out)
        );
        let (okv, out, err) = verify(cfg, &rec).await;
        assert!(!okv, "verify after the sweep must fail: {out} {err}");
        server.stop();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_server_away_the_recording_waits_in_the_spool_and_goes_up_later() {
    let Some(bin) = s3t::s3fs_binary("storage_s3") else {
        return;
    };
    bounded(async {
        let r = rig((43_200, 43_299)).await;
        let (env, agent, cfg) = (&r.env, &r.agent, &r.cfg);
        let gw = r.gateway().await;
        let (_a, _b, _caller) = talk(gw.sip_addr, agent, 1.0, true).await;
        let call = finished_call(env).await;
        let rec = call.recording_id.clone().expect("recording id").to_string();
        // Several retries fail meanwhile; the file stays and is readable from the spool.
        sleep(Duration::from_secs(3)).await;
        assert_eq!(spool_files(env), vec![format!("{rec}.cgrec")]);
        let (okv, out, err) = verify(cfg, &rec).await;
        assert!(okv, "verify from the spool: {out} {err}");
        assert!(
            gw.stderr_text().contains("upload failed"),
            "the failure is logged"
        );

        let server = r.server(&bin);
        let object = server.object_file(&object_key(&rec));
        wait_for(
            Duration::from_secs(15),
            "the retry uploads once the server is back",
            || object.is_file() && spool_files(env).is_empty(),
        )
        .await;
        gw.stop().await;
        let (okv, out, err) = verify(cfg, &rec).await;
        assert!(okv, "verify from the bucket: {out} {err}");
        server.stop();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_recording_goes_up_in_parts_to_the_real_server() {
    let Some(bin) = s3t::s3fs_binary("storage_s3") else {
        return;
    };
    bounded(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = S3Server::start(&bin, &dir.path().join("s3"), s3t::free_port());
        let config = S3Config {
            bucket: BUCKET.into(),
            prefix: PREFIX.into(),
            endpoint: Some(server.endpoint()),
            region: Some("us-east-1".into()),
            spool: dir.path().join("spool"),
            upload_retry: Duration::from_secs(30),
        };
        let mut s3 = S3Storage::with_credentials(
            &config,
            S3Credentials {
                access_key_id: s3t::ACCESS_KEY.into(),
                secret_access_key: s3t::SECRET_KEY.into(),
            },
        )
        .expect("S3 storage");
        s3.set_multipart_threshold(1024);
        let id = RecordingId::from_string("rec-long-call");
        // 12 MiB: three parts of at least 5 MiB (S3's minimum), the last one short.
        let bytes: Arc<Vec<u8>> = Arc::new(
            (0..12 * 1024 * 1024 + 1234)
                .map(|i: usize| (i * 31 % 253) as u8)
                .collect(),
        );
        use std::io::Write as _;
        s3.spool()
            .create(&id)
            .expect("spool file")
            .write_all(&bytes)
            .expect("write");
        assert_eq!(
            s3.upload(&id).await.expect("multipart upload"),
            bytes.len() as u64
        );
        let stored =
            std::fs::read(server.object_file(&object_key("rec-long-call"))).expect("object file");
        assert!(
            stored == *bytes,
            "the object is the file, byte for byte ({} vs {})",
            stored.len(),
            bytes.len()
        );
        s3.spool().remove(&id).expect("remove spool copy");
        assert!(s3.read_all(&id).await.expect("read back") == *bytes);
        s3.remove(&id).await.expect("remove");
        assert!(!s3.object_exists(&id).await.expect("head"));
        assert!(!Path::new(&server.object_file(&object_key("rec-long-call"))).exists());
        server.stop();
    })
    .await;
}
