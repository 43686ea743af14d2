// Drives headless Chromium through Coffer's web UI like a person would: log in, create a
// folder, upload two files with the picker and one by drag-and-drop, upload files whose names
// exist (keep both, replace), download one, rename (a name with "../" is refused), delete,
// log out. At 1280 and 390 px wide it checks what a person sees in the Name column: each
// icon drawn with a non-zero size in a visible colour, the name left-aligned right beside it.
// Screenshots go to $SCREENSHOT_DIR. Run by tests/e2e/https.rs.
import { chromium } from "playwright-core";
import path from "node:path";

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const base = env("COFFER_URL");
const twoAgain = env("TWO_AGAIN_TEXT");
const env_two_again = () => twoAgain;
const shots = env("SCREENSHOT_DIR");
const step = (s) => console.log(`step: ${s}`);
const check = (ok, what) => {
  if (!ok) throw new Error(what);
};

// What the Name cell of the row for `name` looks like: boxes of the cell, the icon's drawing
// (its path: an icon squeezed to nothing by padding draws a zero-size path) and the link,
// and the colours the icon is painted in.
async function nameCell(page, name) {
  return page.$eval(`tr[data-name="${name}"]`, (row) => {
    const box = (e) => {
      const r = e.getBoundingClientRect();
      return { left: r.left, right: r.right, top: r.top, bottom: r.bottom, w: r.width, h: r.height };
    };
    const cell = row.querySelector("td.name");
    const icon = cell.querySelector("svg.icon");
    const drawing = icon.querySelector("path");
    const link = cell.querySelector("a");
    const cs = getComputedStyle(cell);
    const is = getComputedStyle(icon);
    const ps = getComputedStyle(drawing);
    const range = document.createRange();
    range.selectNodeContents(link);
    return {
      kind: row.dataset.kind,
      cell: box(cell),
      cellPadding: parseFloat(cs.paddingLeft),
      cellBackground: getComputedStyle(row).backgroundColor,
      icon: box(icon),
      drawing: box(drawing),
      text: box(range),
      link: box(link),
      fill: ps.fill,
      stroke: ps.stroke,
      strokeWidth: parseFloat(ps.strokeWidth),
      opacity: Number(is.opacity) * Number(ps.opacity),
      visibility: is.visibility,
      display: is.display,
    };
  });
}

// A CSS colour that shows on a white table: not none/transparent, and not near-white.
function visibleColour(c) {
  if (!c || c === "none" || c === "transparent") return false;
  const m = c.match(/rgba?\(([\d.]+),\s*([\d.]+),\s*([\d.]+)(?:,\s*([\d.]+))?\)/);
  if (!m) return false;
  const [r, g, b] = [m[1], m[2], m[3]].map(Number);
  const a = m[4] === undefined ? 1 : Number(m[4]);
  return a > 0.5 && Math.min(r, g, b) < 235;
}

async function assertNameColumn(page, names, width) {
  for (const name of names) {
    const m = await nameCell(page, name);
    const where = `${name} (${m.kind}) at ${width} px: ${JSON.stringify(m)}`;
    check(m.display !== "none" && m.visibility === "visible" && m.opacity > 0.9, `icon hidden: ${where}`);
    check(m.drawing.w >= 10 && m.drawing.h >= 8, `icon drawn with no size: ${where}`);
    const paint = m.kind === "dir" ? m.fill : m.strokeWidth > 0 ? m.stroke : m.fill;
    check(visibleColour(paint), `icon colour ${paint} not visible: ${where}`);
    // Left-aligned: the icon starts at the cell's padding, the name right after the icon.
    const iconStart = m.drawing.left - (m.cell.left + m.cellPadding);
    check(iconStart >= -1 && iconStart <= 8, `icon is ${iconStart} px from the cell's start: ${where}`);
    const gap = m.text.left - m.drawing.right;
    check(gap >= 0 && gap <= 18, `name is ${gap} px from its icon: ${where}`);
    const iconMid = (m.drawing.top + m.drawing.bottom) / 2;
    check(iconMid >= m.text.top - 4 && iconMid <= m.text.bottom + 4, `icon and name not on one line: ${where}`);
    check(m.text.right <= m.cell.right + 1, `name overflows its cell: ${where}`);
  }
}

async function atWidths(page, names, shot) {
  for (const [width, height] of [[1280, 800], [390, 844]]) {
    await page.setViewportSize({ width, height });
    await assertNameColumn(page, names, width);
    await page.screenshot({ path: path.join(shots, `${shot}-${width}px.png`) });
  }
  await page.setViewportSize({ width: 1280, height: 800 });
}

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
    viewport: { width: 1280, height: 800 },
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

  step("folder row: icon visible, name beside it, at 1280 and 390 px");
  await atWidths(page, ["Shared stuff"], "home");
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

  step("file rows: icons visible, names beside them, at 1280 and 390 px");
  await atWidths(page, ["report one.bin", "notes-é.txt", "dropped.txt"], "folder");

  step("download");
  const [download] = await Promise.all([
    page.waitForEvent("download"),
    page.click('tr[data-name="report one.bin"] a'),
  ]);
  if (download.suggestedFilename() !== "report one.bin") {
    throw new Error(`download named ${download.suggestedFilename()}`);
  }
  await download.saveAs(path.join(env("DOWNLOAD_DIR"), "downloaded.bin"));

  step("upload a file whose name exists: asked, keep both");
  await page.setInputFiles("#picker", [env("UPLOAD_ONE_AGAIN")]);
  await page.waitForSelector("#conflict[open]");
  const asked = await page.textContent("#conflict-name");
  check(asked === "report one.bin", `the dialog names ${asked}`);
  let reloaded = page.waitForNavigation();
  await page.click("#conflict-keep");
  await reloaded;
  await page.waitForSelector('tr[data-name="report one (1).bin"]');
  await page.waitForSelector('tr[data-name="report one.bin"]');

  step("upload a file whose name exists: asked, replace");
  await page.setInputFiles("#picker", [env("UPLOAD_TWO_AGAIN")]);
  await page.waitForSelector("#conflict[open]");
  reloaded = page.waitForNavigation();
  await page.click("#conflict-replace");
  await reloaded;
  await page.waitForSelector('tr[data-name="notes-é.txt"]');
  const replaced = await page.evaluate(async () => {
    const r = await fetch("/api/v1/files/Shared%20stuff/notes-%C3%A9.txt");
    return r.text();
  });
  check(replaced === env_two_again(), `after replace the file holds ${JSON.stringify(replaced)}`);

  step("upload a file whose name exists: asked, skip");
  await page.setInputFiles("#picker", [env("UPLOAD_ONE_AGAIN")]);
  await page.waitForSelector("#conflict[open]");
  await page.click("#conflict-cancel");
  await page.waitForSelector(".uploads li.skipped");
  check(
    (await page.$$('tr[data-name="report one (2).bin"]')).length === 0,
    "a skipped upload was stored",
  );

  step("rename refuses a name that would move the file");
  answers.push("../escaped.bin");
  await page.click('tr[data-name="report one.bin"] button.rename');
  await page.waitForSelector("#status:not(:empty)");
  const refusal = await page.textContent("#status");
  console.log(`rename refusal: ${refusal}`);
  await page.reload();
  await page.waitForSelector('tr[data-name="report one.bin"]');
  check((await page.$$('tr[data-name="escaped.bin"]')).length === 0, "the file was moved");

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
  const want = ["renamed report.bin", "report one (1).bin"];
  if (left.slice().sort().join("|") !== want.join("|")) {
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
