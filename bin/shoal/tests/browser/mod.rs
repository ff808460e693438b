//! A headless Chromium (Debian's `chromium`, installed by
//! `tests/setup.sh`) driven through `chromiumoxide`, for the dashboard
//! tests: they open a page, type, click and read it as a user would.

use chromiumoxide::cdp::browser_protocol::emulation::SetDeviceMetricsOverrideParams;
use chromiumoxide::cdp::browser_protocol::page::CaptureScreenshotFormat;
use chromiumoxide::page::ScreenshotParams;
use chromiumoxide::{BrowserConfig, Page};
use futures::StreamExt;
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

/// The browser to drive: `SHOAL_CHROMIUM`, else the first on the path
/// (its full path).
pub fn chromium() -> Option<String> {
    if let Ok(p) = std::env::var("SHOAL_CHROMIUM") {
        return Some(p);
    }
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|b| {
            let o = Command::new("sh")
                .args(["-c", &format!("command -v {b}")])
                .output()
                .ok()?;
            let path = String::from_utf8_lossy(&o.stdout).trim().to_owned();
            (o.status.success() && !path.is_empty()).then_some(path)
        })
}

/// One headless browser and its one page. Its calls block (the tests are
/// synchronous); each gives up after `STEP`.
pub struct Browser {
    rt: tokio::runtime::Runtime,
    browser: chromiumoxide::Browser,
    page: Page,
}

/// The longest one browser step may take.
const STEP: Duration = Duration::from_secs(30);

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the browser process it started (by its handle, not by name).
        let browser = &mut self.browser;
        self.rt.block_on(async {
            let _ = tokio::time::timeout(Duration::from_secs(5), browser.close()).await;
            let _ = browser.kill().await;
        });
    }
}

/// How to start `bin` so that it cannot raise its own priority. Chromium
/// run as root sets its browser and compositor threads to nice -8; on a
/// two-core machine those then take the cores from the cluster under
/// test, whose voters go unheard for an election timeout. Without
/// `CAP_SYS_NICE` (`setpriv`, where there is one) they stay at nice 0.
fn without_priority(bin: &str, profile: &std::path::Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let has_setpriv = Command::new("setpriv").arg("--version").output();
    if !has_setpriv.is_ok_and(|o| o.status.success()) {
        return bin.to_owned();
    }
    let wrapper = profile.with_extension("sh");
    let script = format!("#!/bin/sh\nexec setpriv --bounding-set -sys_nice -- '{bin}' \"$@\"\n");
    std::fs::write(&wrapper, script).expect("write the browser's wrapper");
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))
        .expect("make the wrapper executable");
    wrapper.to_string_lossy().into_owned()
}

impl Browser {
    pub fn start(bin: &str, profile: &std::path::Path) -> Browser {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let config = BrowserConfig::builder()
            .chrome_executable(without_priority(bin, profile))
            .new_headless_mode()
            .no_sandbox()
            .user_data_dir(profile)
            .window_size(1400, 1000)
            .viewport(None)
            .args(["--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"])
            .launch_timeout(STEP)
            .request_timeout(STEP)
            .build()
            .expect("a browser configuration");
        let (browser, page) = rt.block_on(async {
            let (browser, mut handler) = chromiumoxide::Browser::launch(config)
                .await
                .expect("start chromium");
            tokio::spawn(async move { while handler.next().await.is_some() {} });
            let page = browser.new_page("about:blank").await.expect("a page");
            (browser, page)
        });
        Browser { rt, browser, page }
    }

    fn run<T>(&self, what: &str, step: impl std::future::Future<Output = T>) -> T {
        self.rt
            .block_on(async { tokio::time::timeout(STEP, step).await })
            .unwrap_or_else(|_| panic!("{what}: no answer within {STEP:?}"))
    }

    /// Opens `url` and waits for it to load.
    pub fn open(&mut self, url: &str) {
        let page = &self.page;
        self.run("open", async { page.goto(url).await.map(|_| ()) })
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The value of a JavaScript expression (null if it throws or has none).
    pub fn eval(&mut self, expr: &str) -> Value {
        let page = &self.page;
        self.run("eval", async {
            match page.evaluate(expr).await {
                Ok(r) => r.into_value::<Value>().unwrap_or(Value::Null),
                Err(_) => Value::Null,
            }
        })
    }

    /// The text the element `selector` finds shows, if there is one.
    pub fn text(&mut self, selector: &str) -> Option<String> {
        let page = &self.page;
        self.run("text", async {
            let e = page.find_element(selector).await.ok()?;
            e.inner_text().await.ok().flatten()
        })
    }

    /// Clicks the element `selector` finds, as a mouse would: whether
    /// there was one.
    pub fn click(&mut self, selector: &str) -> bool {
        let page = &self.page;
        self.run("click", async {
            match page.find_element(selector).await {
                Ok(e) => e.click().await.is_ok(),
                Err(_) => false,
            }
        })
    }

    /// Types `text` into the field `selector` finds, after what it holds.
    pub fn type_into(&mut self, selector: &str, text: &str) {
        let page = &self.page;
        self.run("type", async {
            let e = page.find_element(selector).await?;
            // Focused, not clicked: a click lands wherever the point is
            // once the page has moved under it, and a render a second
            // moves it.
            e.focus().await?.type_str(text).await.map(|_| ())
        })
        .unwrap_or_else(|e| panic!("type into {selector}: {e}"));
    }

    /// node id -> liveness, as the page shows it.
    pub fn rows(&mut self) -> Vec<(String, String)> {
        let v = self.eval(
            "JSON.stringify([...document.querySelectorAll('tr[data-node]')]\
             .map(r => [r.dataset.node, r.dataset.liveness]))",
        );
        serde_json::from_str(v.as_str().unwrap_or("[]")).unwrap_or_default()
    }

    /// The whole page as a PNG, `width` CSS pixels wide (`height` the
    /// viewport's height), saved under the test's target tmp directory as
    /// `name`.
    pub fn screenshot(&mut self, name: &str, width: u32, height: u32) {
        let page = &self.page;
        let png = self
            .run("screenshot", async {
                let size = SetDeviceMetricsOverrideParams::new(width, height, 1.0, width < 600);
                page.execute(size).await?;
                tokio::time::sleep(Duration::from_millis(300)).await;
                let shot = ScreenshotParams::builder()
                    .format(CaptureScreenshotFormat::Png)
                    .full_page(true)
                    .build();
                page.screenshot(shot).await
            })
            .expect("a screenshot");
        assert!(png.starts_with(b"\x89PNG"));
        let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        std::fs::write(&path, &png).unwrap();
        eprintln!("screenshot: {}", path.display());
    }
}
