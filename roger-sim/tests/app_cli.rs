//! Scenario (issue 4): the `roger-sim phone` and `roger-sim desktop` entry points against an in-process server.
//! The desktop command shows its login code (PROTOCOL.md §4, R-QR-1), alice's phone approves it as a typed code,
//! the desktop queues a file with metadata only (R-DATA-1); the phone command lists it; a foreign-origin QR given to
//! the phone command is refused (R-QR-4) and the command reports why.

mod common;

use common::TestServer;
use roger_proto::api::{CodeKind, JobSource};
use roger_proto::secret::Password;
use roger_sim::desktop::{self, DesktopAction, DesktopArgs};
use roger_sim::phone::app::ServerArgs;
use roger_sim::phone::cli::{execute, PhoneAction, PhoneArgs, PhoneCliError};
use roger_sim::phone::{ClientConfig, Phone, PhoneError};

fn phone_args(s: &TestServer, action: PhoneAction) -> PhoneArgs {
    PhoneArgs {
        server: ServerArgs::loopback(s.server.info.discovery.clone()),
        tenant: "acme".into(),
        user: "alice".into(),
        password: Some("alice-pass".into()),
        action,
    }
}

#[tokio::test]
async fn desktop_and_phone_commands() {
    let s = TestServer::start().await;
    s.settings(serde_json::json!({ "interval_secs": 1 })).await;
    let dir = std::env::temp_dir().join(format!("roger-app-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("memo.txt");
    std::fs::write(&file, b"a memo that stays on this computer").expect("file");
    let qr = dir.join("login.png");

    // `roger-sim desktop submit FILE`: its progress lines go to a channel so the "phone user" can read the code.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let args = DesktopArgs {
        server: ServerArgs::loopback(s.server.info.discovery.clone()),
        qr_png: Some(qr.clone()),
        action: DesktopAction::Submit { file: file.clone(), pages: 2, wait: 0 },
    };
    let desktop = tokio::spawn(async move {
        let mut say = move |line: &str| {
            let _ = tx.send(line.to_owned());
        };
        desktop::execute(args, &mut say).await
    });

    let mut phone = Phone::connect(&ClientConfig::loopback(&s.server.info.discovery)).await.expect("phone");
    phone.login("acme", "alice", Password::new("alice-pass")).await.expect("signed in");
    let typed = loop {
        let line = rx.recv().await.expect("the desktop prints its code");
        if let Some(rest) = line.strip_prefix("approve code ") {
            break rest.split_whitespace().next().expect("code").to_owned();
        }
    };
    assert_eq!(typed.len(), 9, "shown as XXXX-XXXX: {typed}");
    // The PNG the desktop wrote is the same code (what `roger-sim phone approve --png` would read).
    let from_png = phone.scan_png(&std::fs::read(&qr).expect("qr png")).expect("scannable");
    let code = phone.typed_code(&typed).expect("typed code");
    assert_eq!(from_png, code);
    let review = phone.look_up(&code).await.expect("lookup");
    phone.approve(&review, Some(CodeKind::Desktop)).await.expect("approved");

    desktop.await.expect("joined").expect("the desktop command succeeds");
    let mut lines = Vec::new();
    while let Ok(l) = rx.try_recv() {
        lines.push(l);
    }
    assert!(lines.iter().any(|l| l == "signed in as alice"), "{lines:?}");
    assert!(lines.iter().any(|l| l.starts_with("queued memo.txt as job ")), "{lines:?}");

    // `roger-sim phone jobs` lists the desktop job beside the fixture's drive job.
    let out = execute(phone_args(&s, PhoneAction::Jobs { wait: 0, file: None })).await.expect("phone jobs");
    assert_eq!(out[0], format!("signed in as alice at {}", s.api));
    assert_eq!(out[1], "2 queued job(s)", "{out:?}");
    assert!(out.iter().any(|l| l.contains("memo.txt") && l.contains(&format!("{:?}", JobSource::Desktop))), "{out:?}");

    // `roger-sim phone approve --qr` with a sticker from another origin: refused, with the rule in the message.
    let before = s.log().await.len();
    let sticker = format!("https://phish.example/device?user_code={}", code.secret());
    let err = execute(phone_args(
        &s,
        PhoneAction::Approve { qr: Some(sticker), png: None, code: None, deny: false, expect: None },
    ))
    .await
    .expect_err("foreign QR");
    assert!(matches!(err, PhoneCliError::Phone(PhoneError::Qr(_))), "{err:?}");
    assert!(err.to_string().contains("R-QR-4"), "{err}");
    assert_eq!(s.log().await.len(), before, "refused before signing in or looking anything up");

    let _ = std::fs::remove_dir_all(&dir);
    s.server.stop().await;
}
