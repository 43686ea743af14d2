// Drives headless Chromium through Coffer's web UI like a person would: log in, create a
// folder, upload two files with the picker and one by drag-and-drop, download one, rename,
// delete, log out. Screenshots go to $SCREENSHOT_DIR. Run by tests/e2e/https.rs.
import { chromium } from "playwright-core";
import path from "node:path";

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const base = env("COFFER_URL");
const shots = env("SCREENSHOT_DIR");
const step = (s) => console.log(`step: ${s}`);

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
try {
  const context = await browser.newContext({
    ignoreHTTPSErrors: true,
    acceptDownloads: true,
    viewport: { width: 1200, height: 760 },
  });
  const page = await context.newPage();
  const answers = [];
  page.on("dialog", async (d) => {
    if (d.type() === "prompt") await d.accept(answers.shift());
    else await d.accept();
  });
  page.on("pageerror", (e) => console.log(`page error: ${e}`));
  page.on("console", (m) => console.log(`console: ${m.text()}`));

  step("login page");
  await page.goto(`${base}/files/`);
  await page.waitForURL(/\/login$/);
  await page.screenshot({ path: path.join(shots, "login.png") });
  await page.fill("#user", env("COFFER_USER"));
  await page.fill("#password", "wrong password");
  await page.click("#login");
  await page.waitForSelector(".error");
  await page.fill("#user", env("COFFER_USER"));
  await page.fill("#password", env("COFFER_PASSWORD"));
  await page.click("#login");
  await page.waitForURL(/\/files\/$/);

  step("new folder");
  answers.push("Shared stuff");
  await page.click("#new-folder");
  await page.waitForSelector('tr[data-name="Shared stuff"]');
  await page.click('tr[data-name="Shared stuff"] a');
  await page.waitForURL(/\/files\/Shared%20stuff\/$/);

  step("upload two files with the picker");
  await page.setInputFiles("#picker", [env("UPLOAD_ONE"), env("UPLOAD_TWO")]);
  await page.waitForSelector(".uploads li.done >> nth=1");
  await page.waitForSelector('tr[data-name="report one.bin"]');
  await page.waitForSelector('tr[data-name="notes-é.txt"]');

  step("upload one file by drag and drop");
  await page.evaluate(() => {
    const dt = new DataTransfer();
    dt.items.add(new File(["dropped in\n"], "dropped.txt", { type: "text/plain" }));
    document.dispatchEvent(new DragEvent("dragenter", { dataTransfer: dt, bubbles: true }));
    document.dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
  });
  await page.waitForSelector('tr[data-name="dropped.txt"]');

  step("sort by size");
  await page.click('th[data-sort="size"] button');
  const bySize = await page.$$eval("tbody tr[data-name]", (rows) => rows.map((r) => r.dataset.name));
  console.log(`sorted by size: ${bySize.join(", ")}`);
  if (bySize[0] !== "dropped.txt" || bySize[2] !== "report one.bin") {
    throw new Error(`sorting by size gave ${bySize}`);
  }
  await page.screenshot({ path: path.join(shots, "folder.png") });
  await page.setViewportSize({ width: 375, height: 740 });
  await page.screenshot({ path: path.join(shots, "folder-375px.png") });
  await page.setViewportSize({ width: 1200, height: 760 });

  step("download");
  const [download] = await Promise.all([
    page.waitForEvent("download"),
    page.click('tr[data-name="report one.bin"] a'),
  ]);
  if (download.suggestedFilename() !== "report one.bin") {
    throw new Error(`download named ${download.suggestedFilename()}`);
  }
  await download.saveAs(path.join(env("DOWNLOAD_DIR"), "downloaded.bin"));

  step("rename");
  answers.push("renamed report.bin");
  await page.click('tr[data-name="report one.bin"] button.rename');
  await page.waitForSelector('tr[data-name="renamed report.bin"]');

  step("delete with confirmation");
  await page.click('tr[data-name="notes-é.txt"] button.delete');
  await page.waitForSelector('tr[data-name="notes-é.txt"]', { state: "detached" });
  await page.click('tr[data-name="dropped.txt"] button.delete');
  await page.waitForSelector('tr[data-name="dropped.txt"]', { state: "detached" });
  await page.reload();
  const left = await page.$$eval("tbody tr[data-name]", (rows) => rows.map((r) => r.dataset.name));
  if (left.length !== 1 || left[0] !== "renamed report.bin") {
    throw new Error(`after delete the folder holds ${left}`);
  }

  step("log out");
  await page.click("#logout");
  await page.waitForURL(/\/login$/);
  await page.goto(`${base}/files/`);
  await page.waitForURL(/\/login$/);
  console.log("browser test passed");
} finally {
  await browser.close();
}
