//! The HTML reports in a real headless browser (Debian's chromium): every plot has drawn,
//! the page makes no network request, and a screenshot is kept in the test's output.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use loyalscore::model::{sha256_hex, Manifest, MANIFEST_FILE, REPORT_FILE};

use super::support::{sample, text, train_cli};

/// Appended to a copy of the page, run once it has loaded: for each `figure.plot`, the
/// elements drawn in a colour (not black, white or none) before the legend box, with a
/// non-empty box in the layout the browser computed (axes and grid are black, so they do not
/// count); and every resource the page loaded.
const MEASURE: &str = r#"<script>
window.addEventListener('load', () => {
const out = [];
for (const f of document.querySelectorAll('figure.plot')) {
  const svg = f.querySelector('svg');
  let drawn = 0;
  for (const el of (svg ? svg.children : [])) {
    const fill = el.getAttribute('fill'), stroke = el.getAttribute('stroke');
    if (el.tagName === 'rect' && fill === '#FFFFFF' && el.getAttribute('opacity') === '0.9') break;
    const plain = c => !c || c === 'none' || c === '#000000' || c === '#FFFFFF';
    if (plain(fill) && plain(stroke)) continue;
    const b = el.getBBox();
    const len = el.getTotalLength ? el.getTotalLength() : 0;
    if (b.width * b.height > 0 || len > 0) drawn++;
  }
  out.push(f.id + '=' + drawn);
}
const pre = document.createElement('pre');
pre.id = 'drawn';
pre.textContent = out.join(' ');
document.body.appendChild(pre);
const res = document.createElement('pre');
res.id = 'resources';
res.textContent = performance.getEntriesByType('resource').map(r => r.name).join(' ');
document.body.appendChild(res);
});
</script>"#;

/// Any connection the browser opens: chromium sends every request (loopback too) to this
/// proxy, which answers each with an empty 404.
pub struct Watch {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watch {
    pub fn start() -> Watch {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let (seen, stop) = (
            Arc::new(Mutex::new(Vec::new())),
            Arc::new(AtomicBool::new(false)),
        );
        let (s, st) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut c, _)) => {
                        c.set_read_timeout(Some(Duration::from_millis(500))).ok();
                        let mut buf = [0u8; 256];
                        let n = c.read(&mut buf).unwrap_or(0);
                        let line = String::from_utf8_lossy(&buf[..n]);
                        s.lock()
                            .unwrap()
                            .push(line.lines().next().unwrap_or("").to_string());
                        use std::io::Write;
                        let _ = c.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Watch {
            port,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// Requests other than the browser's own: headless chromium still asks Google's hosts
    /// for the time and for sign-in whatever page it shows (it does so for about:blank).
    pub fn requests(&self) -> Vec<String> {
        let own = |r: &String| {
            let host = r.split_whitespace().nth(1).unwrap_or("");
            let host = host
                .trim_start_matches("http://")
                .split(['/', ':'])
                .next()
                .unwrap_or("");
            host == "google.com" || host.ends_with(".google.com")
        };
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|r| !own(r))
            .cloned()
            .collect()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs headless chromium on a local file with everything sent through `watch`.
fn chromium(page: &Path, watch: &Watch, extra: &[String]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-default-apps",
            "--no-pings",
            &format!("--user-data-dir={}", profile.path().display()),
            &format!("--proxy-server=http://127.0.0.1:{}", watch.port),
            "--proxy-bypass-list=<-loopback>",
            "--virtual-time-budget=5000",
        ])
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap_or_else(|e| panic!("chromium did not run ({e}); scripts/test.sh installs it"));
    assert!(out.status.success(), "chromium: {}", text(&out.stderr));
    text(&out.stdout)
}

/// What the probe wrote into the page's `<pre id="...">`.
fn probed<'a>(dom: &'a str, id: &str) -> &'a str {
    let open = format!("<pre id=\"{id}\">");
    let at = dom.find(&open).expect("the probe ran") + open.len();
    &dom[at..at + dom[at..].find("</pre>").unwrap()]
}

/// Each figure's id and how many elements it drew, as the browser laid them out, and the
/// resources the page loaded (Resource Timing: images, styles, fonts, scripts, fetches).
fn drawn(page: &Path, watch: &Watch) -> (Vec<(String, usize)>, String) {
    let html = std::fs::read_to_string(page).unwrap();
    let probe = page.with_extension("probe.html");
    std::fs::write(
        &probe,
        html.replace("</body>", &format!("{MEASURE}</body>")),
    )
    .unwrap();
    let dom = chromium(&probe, watch, &["--dump-dom".to_string()]);
    let figures = probed(&dom, "drawn")
        .split_whitespace()
        .map(|p| {
            let (id, n) = p.split_once('=').unwrap();
            (id.to_string(), n.parse().unwrap())
        })
        .collect();
    (figures, probed(&dom, "resources").to_string())
}

pub fn screenshot(page: &Path, name: &str, watch: &Watch) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let png = dir.join(name);
    let _ = std::fs::remove_file(&png);
    chromium(
        page,
        watch,
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1280,5600".into(),
        ],
    );
    let bytes = std::fs::read(&png).expect("chromium wrote the screenshot");
    assert_eq!(&bytes[1..4], b"PNG");
    assert!(
        bytes.len() > 50_000,
        "a screenshot of a page of plots: {} bytes",
        bytes.len()
    );
    eprintln!("screenshot: {}", png.display());
    png
}

/// Every plot drew something, and there are as many as the report has.
pub fn assert_all_drawn(page: &Path, watch: &Watch, at_least: usize) {
    let (figures, resources) = drawn(page, watch);
    assert_eq!(resources, "", "{} loaded resources", page.display());
    assert!(
        figures.len() >= at_least,
        "{} figures: {figures:?}",
        figures.len()
    );
    let empty: Vec<_> = figures.iter().filter(|(_, n)| *n == 0).collect();
    assert!(empty.is_empty(), "plots that drew nothing: {empty:?}");
}

fn fit(csv: &Path, registry: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "fit",
        "--transactions",
        csv.to_str().unwrap(),
        "--registry",
        registry.to_str().unwrap(),
        "--trees",
        "12",
        "--json",
    ];
    args.extend(extra);
    let out = train_cli(&args);
    assert!(out.status.success(), "fit: {}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["version"].as_str().unwrap().to_string()
}

#[test]
fn training_reports_render_in_a_browser_without_any_request() {
    let dir = tempfile::tempdir().unwrap();
    let (csv, _) = sample(dir.path(), 1500, 700, 18);
    let reg = dir.path().join("registry");
    let a = fit(&csv, &reg, &[]);
    let b = fit(&csv, &reg, &["--seed", "7", "--churn-max-depth", "3"]);

    // The fit wrote the report into the version, listed with its checksum.
    let vdir = reg.join("versions").join(&a);
    let m = Manifest::from_json(&std::fs::read(vdir.join(MANIFEST_FILE)).unwrap()).unwrap();
    let report = std::fs::read(vdir.join(REPORT_FILE)).unwrap();
    let entry = m
        .files
        .iter()
        .find(|f| f.name == REPORT_FILE)
        .expect("listed");
    assert_eq!(entry.sha256, sha256_hex(&report));
    assert!(m
        .profile
        .as_ref()
        .is_some_and(|p| p.rows > 0 && !p.features.is_empty()));

    let both = dir.path().join("both.html");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_loyalscore"))
        .args(["--registry", reg.to_str().unwrap(), "models", "report", &a])
        .args(["--against", &b, "--out", both.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "models report: {}", text(&out.stderr));
    let html = std::fs::read_to_string(&both).unwrap();
    assert!(html.contains(&a) && html.contains(&b));

    let watch = Watch::start();
    let single = vdir.join(REPORT_FILE);
    // ROC, PR, calibration, gains and lift for churn and CLV, predicted vs realised CLV, four
    // importances, two histograms.
    assert_all_drawn(&single, &watch, 14);
    assert_all_drawn(&both, &watch, 16);
    screenshot(&single, "training-report.png", &watch);
    screenshot(&both, "training-report-against.png", &watch);
    assert_eq!(
        watch.requests(),
        Vec::<String>::new(),
        "the pages made requests"
    );

    // The watch does see a page that fetches something (so its silence above means it).
    // The checks see an empty plot and a page that fetches something (so their silence
    // above means it).
    let fetching = dir.path().join("fetching.html");
    let img = "<figure class=\"plot\" id=\"x\"><svg></svg></figure><img src=\"http://fonts.example/x.png\">";
    std::fs::write(&fetching, format!("<html><body>{img}</body></html>")).unwrap();
    let (figures, resources) = drawn(&fetching, &watch);
    assert_eq!(
        figures,
        vec![("x".to_string(), 0)],
        "an empty plot counts as not drawn"
    );
    assert!(
        resources.contains("fonts.example/x.png"),
        "resources: {resources:?}"
    );
    assert!(
        watch
            .requests()
            .iter()
            .any(|r| r.contains("fonts.example/x.png")),
        "the proxy saw no request from a fetching page: {:?}",
        watch.requests()
    );
}
