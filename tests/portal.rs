//! The supervisor portal end to end, on the gateway binary with a real recorded call.
//!
//! * In Debian's Chromium (playwright-core, `tests/e2e/portal.mjs`): sign-in refused then
//!   accepted, search by number, playback in the page's `<audio>` element, download, tagging,
//!   sign-out. The WAV the browser got is checked on audio (correlation with what each side
//!   sent) and the audit log on what it records.
//! * Over plain HTTP: the rules a browser would not show. Roles (admin cannot list or play),
//!   byte ranges (seek) with one audit entry per grant, CSRF, sign-in lockout, a restriction
//!   taking effect on a live grant, a disabled account losing its session at once, and a
//!   damaged recording refused (409) without an audit entry.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::audio;
use common::phone::{AgentAnswer, AgentPhone};
use common::process::{GatewayProc, cli};
use common::{GatewayEnv, GatewayOpts, finished_call, talk};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TEST_LIMIT: Duration = Duration::from_secs(180);

async fn bounded<F: Future<Output = ()>>(f: F) {
    if tokio::time::timeout(TEST_LIMIT, f).await.is_err() {
        panic!("test exceeded {TEST_LIMIT:?}");
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// An HTTP/1.1 response.
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        text(&self.body)
    }
    /// The session cookie this response sets, if any.
    fn session(&self) -> Option<String> {
        let v = self.header("set-cookie")?;
        let t = v.strip_prefix("cg_session=")?.split(';').next()?;
        (!t.is_empty()).then(|| t.to_string())
    }
}

/// One request on its own connection (`Connection: close`).
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    extra: &[(&str, &str)],
    form: Option<&str>,
) -> Resp {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the portal");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(c) = cookie {
        req.push_str(&format!("Cookie: cg_session={c}\r\n"));
    }
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = form.unwrap_or("");
    if form.is_some() {
        req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf))
        .await
        .expect("portal answers")
        .unwrap();
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete HTTP head");
    let head = text(&buf[..split]);
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Resp {
        status,
        headers,
        body: buf[split + 4..].to_vec(),
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Signs in; the session cookie, or the refusal.
async fn sign_in(addr: SocketAddr, name: &str, pw: &str) -> Result<String, Resp> {
    let r = http(
        addr,
        "POST",
        "/login",
        None,
        &[],
        Some(&format!(
            "name={}&password={}",
            urlencode(name),
            urlencode(pw)
        )),
    )
    .await;
    match (r.status, r.session()) {
        (303, Some(c)) => Ok(c),
        _ => Err(r),
    }
}

/// The form token of a page (every page of a signed-in user carries it).
fn csrf_of(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .expect("page has a form token")
        + 19;
    page[at..].split('"').next().unwrap().to_string()
}

/// `callgate user add NAME --role ROLE`: the generated password it prints once.
async fn add_user(cfg: &Path, name: &str, role: &str) -> String {
    let (ok, out, err) = cli(cfg, &["user", "add", name, "--role", role]).await;
    assert!(ok, "user add {name}: {}", text(&err));
    let pw = text(&out).trim().to_string();
    assert!(pw.len() >= 12, "a generated password on stdout: {pw:?}");
    pw
}

/// The audit log as JSON entries.
async fn audit(cfg: &Path) -> Vec<serde_json::Value> {
    let (ok, out, err) = cli(
        cfg,
        &[
            "--role", "admin", "audit", "list", "--json", "--limit", "1000",
        ],
    )
    .await;
    assert!(ok, "audit list: {}", text(&err));
    serde_json::from_slice(&out).expect("audit list --json")
}

fn count(entries: &[serde_json::Value], actor: &str, action: &str) -> usize {
    entries
        .iter()
        .filter(|e| e["actor"] == actor && e["action"] == action)
        .count()
}

/// A gateway with one finished, recorded call: (env, config path, gateway, caller audio,
/// agent audio, recording id).
async fn one_recorded_call(
    rtp_ports: (u16, u16),
) -> (GatewayEnv, PathBuf, GatewayProc, Vec<i16>, Vec<i16>, String) {
    let env = GatewayEnv::new(&audio::announcement_at(16_000, 0.5));
    let agent = AgentPhone::start(AgentAnswer::After(Duration::from_millis(100))).await;
    let cfg_text = env.config_text(&GatewayOpts {
        rtp_ports,
        target: &agent.uri(),
        trusted: &["127.0.0.0/8"],
    });
    let cfg = env.dir.path().join("callgate.toml");
    std::fs::write(&cfg, cfg_text).unwrap();
    // The gateway's temporary files (playback renders) go where the test can look.
    let tmp = env.dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let gw = GatewayProc::start_with_env(&cfg, &[("TMPDIR", tmp.to_str().unwrap())]).await;
    let (a, b, _caller) = talk(gw.sip_addr, &agent, 2.0, true).await;
    let call = finished_call(&env).await;
    let rec = call.recording_id.clone().expect("recording id").to_string();
    (env, cfg, gw, a, b, rec)
}

/// How the browser part runs: `None` if node, Chromium or `tests/e2e/node_modules` is
/// missing (then it is skipped with a note, except under CI=true, where that fails).
fn browser_runner() -> Option<PathBuf> {
    let e2e = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let have =
        node && Path::new(&chromium).exists() && e2e.join("node_modules/playwright-core").is_dir();
    if !have {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true: the browser test needs node, {chromium} and `npm ci` in tests/e2e"
        );
        eprintln!(
            "NOTE: node, {chromium} or tests/e2e/node_modules missing; browser part skipped (see README)"
        );
        return None;
    }
    Some(e2e.join("portal.mjs"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_finds_plays_downloads_and_tags_a_call_in_chromium() {
    bounded(async {
        let Some(script) = browser_runner() else {
            return;
        };
        let (env, cfg, gw, a, b, rec) = one_recorded_call((43_500, 43_599)).await;
        let pw = add_user(&cfg, "sam", "supervisor").await;
        let downloaded = env.dir.path().join("downloaded.wav");
        let played = env.dir.path().join("played.wav");
        let base = format!("http://{}", gw.http_addr);
        let o = tokio::process::Command::new("node")
            .arg(&script)
            .env("BASE", &base)
            .env("USER", "sam")
            .env("PASSWORD", &pw)
            // As a person would type it: national form with a space.
            .env("NUMBER", "07700 900123")
            .env("REC", &rec)
            .env("OUT_DOWNLOAD", &downloaded)
            .env("OUT_PLAYED", &played)
            .output()
            .await
            .expect("run node");
        let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| {
            panic!(
                "portal.mjs report: {}\n{}",
                text(&o.stdout),
                text(&o.stderr)
            )
        });
        assert!(
            o.status.success() && report["ok"] == true,
            "browser run failed: {report:#}\n{}",
            text(&o.stderr)
        );
        assert_eq!(report["who"], "sam (supervisor)");
        // The player saw the whole call: about 2 s of talk plus announcement and setup.
        let duration = report["played"]["duration"].as_f64().unwrap();
        assert!((2.0..10.0).contains(&duration), "duration {duration}");
        assert_eq!(report["played_type"], "audio/wav");
        assert_eq!(report["download_name"], format!("{rec}.wav"));
        assert_eq!(report["tag_message"], "Tag added.");

        // What the browser got is the call, on audio: left the caller, right the agent; the
        // bytes the player streamed are the bytes of the download.
        audio::assert_stereo_holds(&downloaded, &a, &b);
        assert_eq!(
            std::fs::read(&played).unwrap(),
            std::fs::read(&downloaded).unwrap()
        );
        gw.stop().await;

        let log = audit(&cfg).await;
        assert_eq!(
            count(&log, "portal", "portal.login-failed"),
            1,
            "the wrong password"
        );
        assert_eq!(count(&log, "sam", "portal.login"), 1);
        assert_eq!(count(&log, "sam", "portal.logout"), 1);
        let decrypts: Vec<_> = log
            .iter()
            .filter(|e| e["actor"] == "sam" && e["action"] == "recording.decrypt")
            .collect();
        let modes: Vec<String> = decrypts
            .iter()
            .map(|e| {
                let d: serde_json::Value =
                    serde_json::from_str(e["details"].as_str().unwrap_or("{}")).unwrap_or_default();
                assert_eq!(d["via"], "portal", "{e}");
                assert!(e["targets"].to_string().contains(&rec), "{e}");
                d["mode"].as_str().unwrap_or("").to_string()
            })
            .collect();
        // One play (its seeks and the re-fetch share the grant), one download.
        assert_eq!(modes, ["play", "download"], "{decrypts:#?}");
        let tag = log
            .iter()
            .find(|e| e["actor"] == "sam" && e["action"] == "tag.add")
            .expect("tag.add by sam");
        assert!(tag["details"].to_string().contains("training"), "{tag}");
        assert_eq!(tag["role"], "supervisor");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_enforces_roles_ranges_csrf_lockout_restriction_and_damage() {
    bounded(async {
        let (env, cfg, gw, _a, _b, rec) = one_recorded_call((43_600, 43_699)).await;
        let addr = gw.http_addr;
        let sup_pw = add_user(&cfg, "sam", "supervisor").await;
        let adm_pw = add_user(&cfg, "ada", "admin").await;
        let _ = add_user(&cfg, "lou", "supervisor").await;

        // Accounts: names are unique, passwords checked, roles checked.
        let (ok, _, err) = cli(&cfg, &["user", "add", "sam", "--role", "dpo"]).await;
        assert!(
            !ok && text(&err).contains("exists already"),
            "{}",
            text(&err)
        );
        let (ok, _, err) = cli(&cfg, &["user", "add", "x y", "--role", "dpo"]).await;
        assert!(!ok && text(&err).contains("user name"), "{}", text(&err));
        let (ok, _, err) = cli(&cfg, &["user", "add", "nobody"]).await;
        assert!(!ok, "a role is required: {}", text(&err));
        let (ok, out, _) = cli(&cfg, &["user", "list", "--json"]).await;
        assert!(ok);
        let listed = text(&out);
        assert!(
            listed.contains("\"sam\"") && !listed.contains("argon2") && !listed.contains(&sup_pw),
            "{listed}"
        );

        // Not signed in: pages redirect, audio is refused.
        let r = http(addr, "GET", "/recordings", None, &[], None).await;
        assert_eq!((r.status, r.header("location")), (303, Some("/login")));
        assert_eq!(
            http(
                addr,
                "GET",
                &format!("/recordings/{rec}/audio.wav"),
                None,
                &[],
                None
            )
            .await
            .status,
            401
        );
        let r = http(addr, "GET", "/login", None, &[], None).await;
        assert_eq!(r.status, 200);
        for h in [
            "content-security-policy",
            "x-frame-options",
            "cache-control",
        ] {
            assert!(r.header(h).is_some(), "{h} on the sign-in page");
        }

        // Lockout: five wrong passwords lock the name; then even the right one is refused.
        for _ in 0..5 {
            assert_eq!(
                sign_in(addr, "lou", "wrong wrong wrong")
                    .await
                    .unwrap_err()
                    .status,
                401
            );
        }
        let lou_pw = {
            let (ok, out, _) = cli(&cfg, &["user", "passwd", "lou"]).await;
            assert!(ok);
            text(&out).trim().to_string()
        };
        let locked = sign_in(addr, "lou", &lou_pw).await.unwrap_err();
        assert!(
            locked.text().contains("Too many failed sign-ins"),
            "{}",
            locked.text()
        );
        // An unknown name is refused like a wrong password, and the typed name is not logged.
        let r = sign_in(addr, "hunter2hunter2", "whatever whatever")
            .await
            .unwrap_err();
        assert!(r.text().contains("Wrong name or password"));

        // The supervisor: search, page, playback with ranges.
        let sam = sign_in(addr, "sam", &sup_pw)
            .await
            .unwrap_or_else(|r| panic!("sam signs in: {} {}", r.status, r.text()));
        let list = http(
            addr,
            "GET",
            "/recordings?number=%2B447700900123",
            Some(&sam),
            &[],
            None,
        )
        .await;
        assert_eq!(list.status, 200);
        assert!(
            list.text().contains(&format!("data-recording=\"{rec}\"")),
            "{}",
            list.text()
        );
        let none = http(
            addr,
            "GET",
            "/recordings?number=01632960000",
            Some(&sam),
            &[],
            None,
        )
        .await;
        assert!(
            !none.text().contains("data-recording="),
            "another number finds nothing"
        );
        let bad = http(
            addr,
            "GET",
            "/recordings?from=2026-02-30",
            Some(&sam),
            &[],
            None,
        )
        .await;
        assert_eq!(bad.status, 400);
        assert!(bad.text().contains("From: a date"), "{}", bad.text());
        let page = http(
            addr,
            "GET",
            &format!("/recordings/{rec}"),
            Some(&sam),
            &[],
            None,
        )
        .await;
        assert_eq!(page.status, 200);
        let csrf = csrf_of(&page.text());

        let audio_path = format!("/recordings/{rec}/audio.wav");
        let full = http(addr, "GET", &audio_path, Some(&sam), &[], None).await;
        assert_eq!(
            (full.status, full.header("content-type")),
            (200, Some("audio/wav"))
        );
        assert_eq!(&full.body[..4], b"RIFF");
        let len = full.body.len();
        let part = http(
            addr,
            "GET",
            &audio_path,
            Some(&sam),
            &[("Range", "bytes=1000-1999")],
            None,
        )
        .await;
        assert_eq!(part.status, 206);
        assert_eq!(
            part.header("content-range"),
            Some(format!("bytes 1000-1999/{len}").as_str())
        );
        assert_eq!(part.body, full.body[1000..2000]);
        let tail = http(
            addr,
            "GET",
            &audio_path,
            Some(&sam),
            &[("Range", "bytes=-44")],
            None,
        )
        .await;
        assert_eq!(tail.body, full.body[len - 44..]);
        let past = http(
            addr,
            "GET",
            &audio_path,
            Some(&sam),
            &[("Range", &format!("bytes={len}-"))],
            None,
        )
        .await;
        assert_eq!(past.status, 416);

        // CSRF: a tag form without the page's token changes nothing.
        let r = http(
            addr,
            "POST",
            &format!("/recordings/{rec}/tags"),
            Some(&sam),
            &[],
            Some("csrf=forged&tag=complaint"),
        )
        .await;
        assert_eq!(r.status, 403);
        // Supervisors may not tag evidence; they may tag complaint.
        let r = http(
            addr,
            "POST",
            &format!("/recordings/{rec}/tags"),
            Some(&sam),
            &[],
            Some(&format!("csrf={csrf}&tag=evidence")),
        )
        .await;
        assert_eq!(r.status, 409);
        assert!(r.text().contains("may not"), "{}", r.text());
        let r = http(
            addr,
            "POST",
            &format!("/recordings/{rec}/tags"),
            Some(&sam),
            &[],
            Some(&format!("csrf={csrf}&tag=complaint&note=rude")),
        )
        .await;
        assert_eq!(
            (r.status, r.header("location")),
            (303, Some(format!("/recordings/{rec}?m=tagged").as_str()))
        );
        let tagged = http(
            addr,
            "GET",
            "/recordings?tag=complaint",
            Some(&sam),
            &[],
            None,
        )
        .await;
        assert!(tagged.text().contains(&format!("data-recording=\"{rec}\"")));

        // The admin: no recordings, no audio; the audit page.
        let ada = sign_in(addr, "ada", &adm_pw)
            .await
            .unwrap_or_else(|r| panic!("ada: {}", r.text()));
        assert_eq!(
            http(addr, "GET", "/", Some(&ada), &[], None)
                .await
                .header("location"),
            Some("/audit")
        );
        assert_eq!(
            http(addr, "GET", "/recordings", Some(&ada), &[], None)
                .await
                .status,
            403
        );
        assert_eq!(
            http(addr, "GET", &audio_path, Some(&ada), &[], None)
                .await
                .status,
            403
        );
        let audit_page = http(addr, "GET", "/audit", Some(&ada), &[], None).await;
        assert_eq!(audit_page.status, 200);
        assert!(
            audit_page.text().contains("recording.decrypt")
                && audit_page.text().contains("portal.login")
        );
        assert_eq!(
            http(addr, "GET", "/audit", Some(&sam), &[], None)
                .await
                .status,
            403,
            "supervisors do not read the audit log"
        );

        // A restriction applies at once, even to a live grant; the search hides the recording.
        let (ok, _, err) = cli(
            &cfg,
            &[
                "--actor",
                "dee",
                "--role",
                "dpo",
                "restrict",
                &rec,
                "--reason",
                "subject objected",
            ],
        )
        .await;
        assert!(ok, "{}", text(&err));
        assert_eq!(
            http(addr, "GET", &audio_path, Some(&sam), &[], None)
                .await
                .status,
            403
        );
        assert_eq!(
            http(
                addr,
                "GET",
                &format!("/recordings/{rec}"),
                Some(&sam),
                &[],
                None
            )
            .await
            .status,
            403
        );
        let list = http(addr, "GET", "/recordings", Some(&sam), &[], None).await;
        assert!(
            !list.text().contains(&rec) && list.text().contains("1 restricted not shown"),
            "{}",
            list.text()
        );
        let (ok, _, _) = cli(
            &cfg,
            &["--actor", "dee", "--role", "dpo", "unrestrict", &rec],
        )
        .await;
        assert!(ok);

        // Disabling an account ends its session at the next request.
        let (ok, _, _) = cli(
            &cfg,
            &["user", "disable", "ada", "--reason", "left the team"],
        )
        .await;
        assert!(ok);
        let r = http(addr, "GET", "/audit", Some(&ada), &[], None).await;
        assert_eq!((r.status, r.header("location")), (303, Some("/login")));
        assert!(sign_in(addr, "ada", &adm_pw).await.is_err());

        // One play per grant, however many range requests; a new session is a new play.
        let log = audit(&cfg).await;
        let plays = |log: &[serde_json::Value]| {
            log.iter()
                .filter(|e| e["actor"] == "sam" && e["action"] == "recording.decrypt")
                .count()
        };
        assert_eq!(plays(&log), 1, "five audio requests, one grant");
        let failed: Vec<_> = log
            .iter()
            .filter(|e| e["action"] == "portal.login-failed")
            .collect();
        assert_eq!(
            failed.len(),
            8,
            "five for lou, the locked try, the unknown name, the disabled ada"
        );
        assert!(
            !serde_json::to_string(&failed)
                .unwrap()
                .contains("hunter2hunter2"),
            "a typed unknown name is not kept"
        );
        assert_eq!(
            log.iter()
                .filter(|e| e["action"] == "user.add" && e["role"] == "admin")
                .count(),
            3
        );

        // A damaged recording: refused with a message, no audio, no new play entry.
        let file = std::fs::read_dir(&env.storage)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().contains(&rec))
            .or_else(|| {
                walk(&env.storage)
                    .into_iter()
                    .find(|p| p.to_string_lossy().contains(&rec))
            })
            .expect("the recording file");
        let mut bytes = std::fs::read(&file).unwrap();
        let n = bytes.len();
        bytes[n - 40] ^= 0x55;
        std::fs::write(&file, &bytes).unwrap();
        let sam2 = sign_in(addr, "sam", &sup_pw)
            .await
            .unwrap_or_else(|r| panic!("{}", r.text()));
        let r = http(addr, "GET", &audio_path, Some(&sam2), &[], None).await;
        assert_eq!(r.status, 409, "{}", r.text());
        assert!(
            r.text().contains("damaged") && r.text().contains("not played"),
            "{}",
            r.text()
        );
        assert_eq!(
            plays(&audit(&cfg).await),
            1,
            "a refused play is not an audited play"
        );

        let (_, err) = gw.stop().await;
        let log_text = text(&err);
        assert!(
            !log_text.contains(&sup_pw) && !log_text.contains("hunter2hunter2"),
            "no password or typed name in the log"
        );
    })
    .await;
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
