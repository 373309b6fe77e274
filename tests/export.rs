//! Investigation bundles end to end: a real call through the gateway binary is recorded, held
//! and tagged for a case, exported with the CLI, and the bundle checked with `export verify`
//! (alone, and against the gateway's audit log). The audio in the bundle is checked on audio;
//! each kind of tampering is named by verify; a forgery consistent in every hash passes the
//! bundle-only check but not the log check. Also the role and restriction rules, no overwrite,
//! and a damaged recording refusing the whole export while leaving nothing behind.

mod common;

use std::future::Future;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use callgate::audit::Entry;
use callgate::export::{AUDIT, AuditExcerpt, MANIFEST, Manifest, sha256_hex};
use common::audio;
use common::phone::{AgentAnswer, AgentPhone};
use common::process::{GatewayProc, cli};
use common::{CALLER_NUMBER, GatewayEnv, GatewayOpts, finished_call, talk};

const TEST_LIMIT: Duration = Duration::from_secs(120);
const CASE: &str = "INQ-2026-014";

async fn bounded<F: Future<Output = ()>>(f: F) {
    if tokio::time::timeout(TEST_LIMIT, f).await.is_err() {
        panic!("test exceeded {TEST_LIMIT:?}");
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs the CLI; returns (exit 0, stdout, stderr).
async fn run(cfg: &Path, args: &[&str]) -> (bool, String, String) {
    let (ok, out, err) = cli(cfg, args).await;
    (ok, text(&out), text(&err))
}

/// `export verify` (plus `extra` args): (exit 0, stdout).
async fn verify(cfg: &Path, bundle: &Path, extra: &[&str]) -> (bool, String) {
    let b = bundle.display().to_string();
    let mut args = vec!["export", "verify", &b];
    args.extend_from_slice(extra);
    let (ok, out, err) = run(cfg, &args).await;
    assert!(!err.contains("panicked"), "{err}");
    (ok, out)
}

/// `docs/verify_bundle.py` (Python + `cryptography`, no callgate): (exit 0, stdout). `None`
/// when Python or `cryptography` is missing, except under CI=true, where that fails the test.
fn python_verify(bundle: &Path) -> Option<(bool, String)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/verify_bundle.py");
    let probe = std::process::Command::new("python3")
        .args(["-c", "import cryptography"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true: python3 with `cryptography` is required for docs/verify_bundle.py"
        );
        eprintln!("NOTE: python3 with `cryptography` not found; independent verifier not run");
        return None;
    }
    let o = std::process::Command::new("python3")
        .arg(script)
        .arg(bundle)
        .output()
        .unwrap();
    let err = text(&o.stderr);
    assert!(err.is_empty(), "verify_bundle.py stderr: {err}");
    Some((o.status.success(), text(&o.stdout)))
}

fn entry_bytes(zip_path: &Path, name: &str) -> Vec<u8> {
    let mut a = zip::ZipArchive::new(std::fs::File::open(zip_path).unwrap()).unwrap();
    let mut b = Vec::new();
    a.by_name(name).unwrap().read_to_end(&mut b).unwrap();
    b
}

/// A copy of `src` at `dst` with entries replaced (by name), dropped (`None`) or added.
fn rewrite(src: &Path, dst: &Path, changes: &[(&str, Option<Vec<u8>>)]) {
    let mut a = zip::ZipArchive::new(std::fs::File::open(src).unwrap()).unwrap();
    let _ = std::fs::remove_file(dst);
    let mut w = zip::ZipWriter::new(std::fs::File::create(dst).unwrap());
    let o =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut seen = Vec::new();
    for i in 0..a.len() {
        let mut f = a.by_index(i).unwrap();
        let n = f.name().unwrap().to_string();
        let mut b = Vec::new();
        f.read_to_end(&mut b).unwrap();
        let b = match changes.iter().find(|(c, _)| *c == n) {
            Some((_, repl)) => repl.clone(),
            None => Some(b),
        };
        seen.push(n.clone());
        if let Some(b) = b {
            w.start_file(n, o).unwrap();
            w.write_all(&b).unwrap();
        }
    }
    for (n, b) in changes {
        if !seen.iter().any(|s| s == n)
            && let Some(b) = b
        {
            w.start_file(*n, o).unwrap();
            w.write_all(b).unwrap();
        }
    }
    w.finish().unwrap();
}

/// Entries of a bundle to replace (`Some`) or drop (`None`), by name.
type Changes<'a> = Vec<(&'a str, Option<Vec<u8>>)>;

fn flip(mut b: Vec<u8>, at: usize) -> Vec<u8> {
    b[at] ^= 0x40;
    b
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_call_is_exported_for_a_case_and_the_bundle_stands_up() {
    bounded(async {
        let env = GatewayEnv::new(&audio::announcement_at(16_000, 0.5));
        let agent = AgentPhone::start(AgentAnswer::After(Duration::from_millis(100))).await;
        let cfg_text = env.config_text(&GatewayOpts {
            rtp_ports: (43_300, 43_399),
            target: &agent.uri(),
            trusted: &["127.0.0.0/8"],
        });
        let cfg = env.dir.path().join("callgate.toml");
        std::fs::write(&cfg, cfg_text).unwrap();
        let gw = GatewayProc::start(&cfg).await;
        let (a, b, _caller) = talk(gw.sip_addr, &agent, 2.0, true).await;
        let call = finished_call(&env).await;
        gw.stop().await;
        let rec = call.recording_id.clone().expect("recording id").to_string();
        let call_id = call.call_id.to_string();
        let out_dir = env.dir.path().join("out");
        std::fs::create_dir_all(&out_dir).unwrap();
        let bundle = out_dir.join("case.zip");
        let bundle_s = bundle.display().to_string();

        // The case: a hold and the evidence tag, by an investigator.
        let inv = ["--actor", "ivy", "--role", "investigator"];
        let (ok, o, e) = run(
            &cfg,
            &[
                &inv[..],
                &[
                    "hold",
                    "create",
                    "--case",
                    CASE,
                    "--reason",
                    "complaint 77",
                    &rec,
                ],
            ]
            .concat(),
        )
        .await;
        assert!(ok, "{o} {e}");
        let (ok, o, e) = run(
            &cfg,
            &[&inv[..], &["tag", "add", &rec, "evidence"]].concat(),
        )
        .await;
        assert!(ok, "{o} {e}");

        // Who may export: not a supervisor, not an admin (the default role).
        for role in [&["--role", "supervisor"][..], &[][..]] {
            let (ok, _, e) = run(
                &cfg,
                &[role, &["export", "--case", CASE, "--out", &bundle_s, &rec]].concat(),
            )
            .await;
            assert!(!ok && e.contains("may not export"), "{e}");
            assert!(!bundle.exists());
        }

        // Export by call id, as the investigator.
        let (ok, o, e) = run(
            &cfg,
            &[
                &inv[..],
                &[
                    "export",
                    "--case",
                    CASE,
                    "--out",
                    &bundle_s,
                    "--reason",
                    "ombudsman request",
                    &call_id,
                ],
            ]
            .concat(),
        )
        .await;
        assert!(ok, "export: {o} {e}");
        let given = o
            .lines()
            .next()
            .and_then(|l| l.split("audit entry ").nth(1))
            .unwrap_or_else(|| panic!("the export names its audit entry: {o}"))
            .to_owned();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&bundle).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "a bundle holds personal data");
        }
        assert_eq!(
            files_in(&out_dir),
            vec!["case.zip".to_string()],
            "no temporary files left"
        );

        // The audio in the bundle is the call: left = caller's A, right = agent's B.
        let wav = entry_bytes(&bundle, &format!("recordings/{rec}.wav"));
        let wav_path = env.dir.path().join("from-bundle.wav");
        std::fs::write(&wav_path, &wav).unwrap();
        audio::assert_stereo_holds(&wav_path, &a, &b);

        // The manifest: the case's facts, the container the gateway sealed at hangup.
        let manifest_bytes = entry_bytes(&bundle, MANIFEST);
        let m: Manifest = serde_json::from_slice(&manifest_bytes).unwrap();
        assert_eq!(m.case, CASE);
        assert_eq!(
            (m.exported_by.actor.as_str(), m.exported_by.role.as_str()),
            ("ivy", "investigator")
        );
        let r = &m.recordings[0];
        assert_eq!(
            (r.recording_id.as_str(), r.call_id.as_str()),
            (rec.as_str(), call_id.as_str())
        );
        assert!(r.held_for_case);
        assert_eq!(
            r.tags.iter().map(|t| t.tag.as_str()).collect::<Vec<_>>(),
            vec!["evidence"]
        );
        assert_eq!(r.call["from"], CALLER_NUMBER);
        assert_eq!(r.call["announcement"]["state"], "played", "{}", r.call);
        let container = entry_bytes(&bundle, &format!("recordings/{rec}.cgrec"));
        let stored = std::fs::read(env.storage.join(format!("{rec}.cgrec"))).unwrap();
        assert_eq!(container, stored, "the container exactly as stored");
        assert_eq!(
            r.sha256_at_hangup.as_deref(),
            Some(sha256_hex(&stored).as_str())
        );

        // The audit excerpt: the hold, the tag, then the export naming this manifest.
        let ex: AuditExcerpt = serde_json::from_slice(&entry_bytes(&bundle, AUDIT)).unwrap();
        let actions: Vec<&str> = ex.entries.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, vec!["hold.create", "tag.add", "export.create"]);
        let export_entry = ex.entries.last().unwrap();
        assert_eq!(export_entry.reason.as_deref(), Some("ombudsman request"));
        assert!(export_entry.details.contains(&sha256_hex(&manifest_bytes)));
        assert_eq!(
            given,
            format!("#{} {}", export_entry.seq, export_entry.hash)
        );

        // The data key is in the bundle (it is what lets a third party check the WAV) and
        // nowhere in what the command printed or logged (trace level).
        assert!(!o.contains(&r.data_key) && !e.contains(&r.data_key));

        // Verify, alone and against the log: ok, with the same entry as given at export.
        let (ok, o) = verify(&cfg, &bundle, &[]).await;
        assert!(ok, "{o}");
        assert!(
            o.contains(&format!(
                "ok: case {CASE}, 1 recording(s) authenticated and re-rendered"
            )),
            "{o}"
        );
        assert!(o.contains(&format!("audit entry {given}")), "{o}");
        let (ok, o) = verify(&cfg, &bundle, &["--log"]).await;
        assert!(
            ok && o.contains("holds every entry of audit.json unchanged"),
            "{o}"
        );

        // Never overwritten.
        let before = std::fs::read(&bundle).unwrap();
        let (ok, _, e) = run(
            &cfg,
            &[
                &inv[..],
                &["export", "--case", CASE, "--out", &bundle_s, &rec],
            ]
            .concat(),
        )
        .await;
        assert!(!ok && e.contains("already exists"), "{e}");
        assert_eq!(std::fs::read(&bundle).unwrap(), before);

        // Tampering, each named.
        let bad = env.dir.path().join("bad.zip");
        let wav_name = format!("recordings/{rec}.wav");
        let cont_name = format!("recordings/{rec}.cgrec");
        let mid = wav.len() / 2;
        let cont_needle = format!("file {cont_name}: SHA-256 differs");
        let cases: Vec<(&str, Changes, &str)> = vec![
            (
                "one WAV sample changed",
                vec![(wav_name.as_str(), Some(flip(wav.clone(), mid)))],
                "SHA-256 differs from the manifest",
            ),
            (
                "one container byte changed",
                vec![(
                    cont_name.as_str(),
                    Some(flip(container.clone(), container.len() / 2)),
                )],
                cont_needle.as_str(),
            ),
            (
                "the WAV removed",
                vec![(wav_name.as_str(), None)],
                "listed in the manifest but missing",
            ),
            (
                "a file added",
                vec![("recordings/extra.wav", Some(wav.clone()))],
                "not listed in the manifest",
            ),
            (
                "the manifest edited",
                vec![(
                    MANIFEST,
                    Some(
                        text(&manifest_bytes)
                            .replace("\"held_for_case\": true", "\"held_for_case\": false")
                            .into_bytes(),
                    ),
                )],
                "names another manifest",
            ),
            (
                "an audit entry edited",
                vec![(
                    AUDIT,
                    Some(
                        text(&entry_bytes(&bundle, AUDIT))
                            .replace("complaint 77", "complaint 78")
                            .into_bytes(),
                    ),
                )],
                "hash does not match its contents",
            ),
        ];
        for (what, changes, needle) in &cases {
            rewrite(&bundle, &bad, changes);
            let (ok, o) = verify(&cfg, &bad, &[]).await;
            assert!(!ok, "{what}: verify passed: {o}");
            assert!(
                o.contains(needle) && o.contains("NOT INTACT"),
                "{what}: {o}"
            );
        }

        // A forgery consistent in every hash: other audio (the caller's track silenced), its
        // hash in the manifest, the manifest's hash in a re-sealed export entry. It stands up
        // on its own, but not against the log, and its entry hash is not the one given.
        // The verifier re-renders each container and compares with its WAV, so the forger must
        // re-encrypt too: with the data key from the manifest, a container of other audio.
        let forged_container = reencrypt_silencing_caller(&container, &r.data_key);
        let outcome_wav = render(
            &forged_container,
            &r.data_key,
            &env.dir.path().join("forged.wav"),
        );
        assert_ne!(outcome_wav, wav);
        let mut fm = m.clone();
        for f in &mut fm.files {
            if f.name == wav_name {
                f.sha256 = sha256_hex(&outcome_wav);
                f.bytes = outcome_wav.len() as u64;
            }
            if f.name == cont_name {
                f.sha256 = sha256_hex(&forged_container);
                f.bytes = forged_container.len() as u64;
            }
        }
        fm.recordings[0].sha256_at_hangup = Some(sha256_hex(&forged_container));
        fm.recordings[0].chunks = {
            let key = callgate::audit::decode_hex32(&r.data_key).unwrap();
            let dek = callgate::recording::keys::Dek::from_bytes(key);
            callgate::recording::reader::read(&forged_container, &dek).chunks_ok
        };
        let fm_bytes = serde_json::to_vec_pretty(&fm).unwrap();
        let mut fex = ex.clone();
        let last: &mut Entry = fex.entries.last_mut().unwrap();
        last.details = last
            .details
            .replace(&sha256_hex(&manifest_bytes), &sha256_hex(&fm_bytes));
        last.hash = last.compute_hash(&last.prev_hash.clone()).unwrap();
        let forged_hash = last.hash.clone();
        rewrite(
            &bundle,
            &bad,
            &[
                (wav_name.as_str(), Some(outcome_wav)),
                (cont_name.as_str(), Some(forged_container)),
                (MANIFEST, Some(fm_bytes)),
                (AUDIT, Some(serde_json::to_vec(&fex).unwrap())),
            ],
        );
        let (ok, o) = verify(&cfg, &bad, &[]).await;
        assert!(ok, "a consistent forgery passes the bundle-only check: {o}");
        assert!(!o.contains(&given) && o.contains(&forged_hash), "{o}");
        if let Some((ok, o)) = python_verify(&bad) {
            assert!(
                ok && o.contains(&forged_hash),
                "verify_bundle.py on the forgery: {o}"
            );
        }
        let (ok, o) = verify(&cfg, &bad, &["--log"]).await;
        assert!(
            !ok && o.contains("differs from this gateway's entry"),
            "{o}"
        );

        // Restricted: only the dpo exports it.
        let (ok, o, e) = run(
            &cfg,
            &[
                "--role",
                "dpo",
                "restrict",
                &rec,
                "--reason",
                "art. 18 request",
            ],
        )
        .await;
        assert!(ok, "{o} {e}");
        let b2 = out_dir.join("b2.zip").display().to_string();
        let (ok, _, e) = run(
            &cfg,
            &[&inv[..], &["export", "--case", CASE, "--out", &b2, &rec]].concat(),
        )
        .await;
        assert!(!ok && e.contains("restricted"), "{e}");
        let (ok, o, e) = run(
            &cfg,
            &[
                "--role", "dpo", "export", "--case", CASE, "--out", &b2, &rec,
            ],
        )
        .await;
        assert!(ok, "{o} {e}");
        let (ok, o) = verify(&cfg, Path::new(&b2), &["--log"]).await;
        assert!(ok, "{o}");

        // A damaged recording refuses the whole export: no file, no entry.
        let stored_path = env.storage.join(format!("{rec}.cgrec"));
        std::fs::write(&stored_path, flip(stored.clone(), stored.len() / 2)).unwrap();
        let (_, entries_before, _) = run(&cfg, &["audit", "verify"]).await;
        let b3 = out_dir.join("b3.zip").display().to_string();
        let (ok, _, e) = run(
            &cfg,
            &[
                "--role", "dpo", "export", "--case", CASE, "--out", &b3, &rec,
            ],
        )
        .await;
        assert!(!ok && e.contains("damaged"), "{e}");
        let (_, entries_after, _) = run(&cfg, &["audit", "verify"]).await;
        assert_eq!(
            entries_before, entries_after,
            "no audit entry for a refused export"
        );
        assert_eq!(
            files_in(&out_dir),
            vec!["b2.zip".to_string(), "case.zip".to_string()]
        );
    })
    .await;
}

/// What a forger holding the data key can do: decrypt, change the audio, seal a new container
/// under the same key and header.
fn reencrypt_silencing_caller(container: &[u8], key_hex: &str) -> Vec<u8> {
    use callgate::ids::Leg;
    use callgate::recording::container::Record;
    use callgate::recording::keys::Dek;
    use callgate::recording::reader::read;
    use callgate::recording::writer::RecordingWriter;
    use std::time::Instant;
    let key = callgate::audit::decode_hex32(key_hex).unwrap();
    let outcome = read(container, &Dek::from_bytes(key));
    let header = outcome.header.clone().unwrap();
    let t0 = Instant::now();
    let flush = Duration::from_secs(1);
    let mut w = RecordingWriter::new(header, &Dek::from_bytes(key), t0, flush);
    let mut bytes = Vec::new();
    for r in &outcome.records {
        match r {
            Record::Audio {
                leg,
                pos,
                codec,
                payload,
            } => {
                let p: Vec<u8> = if *leg == Leg::Caller {
                    vec![codec.encode(0); payload.len()]
                } else {
                    payload.clone()
                };
                w.push_audio(*leg, *pos, *codec, &p);
            }
            Record::Gap {
                leg,
                from,
                to,
                kind,
            } => w.push_gap(*leg, *from, *to, *kind),
            Record::End { reason } => w.push_end(*reason),
        }
    }
    while let Some(b) = w.poll_output() {
        bytes.extend(b);
    }
    bytes.extend(w.finish().unwrap().bytes);
    bytes
}

/// The WAV a container renders to (as the gateway renders it).
fn render(container: &[u8], key_hex: &str, tmp: &Path) -> Vec<u8> {
    use callgate::recording::keys::Dek;
    let key = callgate::audit::decode_hex32(key_hex).unwrap();
    let outcome = callgate::recording::reader::read(container, &Dek::from_bytes(key));
    callgate::recording::wav::render_stereo_wav(&outcome, tmp).unwrap();
    std::fs::read(tmp).unwrap()
}
