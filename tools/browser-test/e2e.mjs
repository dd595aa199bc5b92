// Opens the demo page in headless chromium, loads an image, clicks a point, waits for the SAM mask,
// clicks Describe and waits for the streamed answer. Usage: node e2e.mjs URL IMAGE SCREENSHOT
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [url, imagePath, screenshot] = process.argv.slice(2);
const profile = mkdtempSync(join(tmpdir(), "gar-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  viewport: { width: 1400, height: 900 },
});
const errors = [];
let failed = false;
try {
  const page = context.pages()[0] || (await context.newPage());
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
  await page.goto(url);
  await page.locator("#model").filter({ hasText: "regions" }).waitFor({ timeout: 20000 });

  await page.setInputFiles("#file", imagePath);
  await page.waitForFunction(() => document.getElementById("canvas").width > 640 || document.getElementById("hint").hidden);
  const box = await page.locator("#canvas").boundingBox();
  const size = await page.evaluate(() => [canvas.width, canvas.height]);
  // The demo image's masked object is near (780, 690) in image pixels.
  const [ix, iy] = [780, 690];
  await page.mouse.click(box.x + (ix * box.width) / size[0], box.y + (iy * box.height) / size[1]);
  await page.locator('#regions li[data-ready="1"]').first().waitFor({ timeout: 120000 });
  console.log("mask:", await page.locator("#status").textContent());

  // Count how often the answer's text changes: streaming means several updates.
  await page.evaluate(() => {
    window.__updates = 0;
    new MutationObserver(() => window.__updates++).observe(document.getElementById("chat"), { subtree: true, characterData: true, childList: true });
  });
  await page.click("#describe");
  const answer = page.locator('.msg.assistant[data-state="done"], .msg.error');
  await answer.first().waitFor({ timeout: 300000 });
  const cls = await answer.first().getAttribute("class");
  const text = await answer.first().textContent();
  const updates = await page.evaluate(() => window.__updates);
  console.log(`answer (${updates} DOM updates): ${text}`);
  console.log("status:", await page.locator("#status").textContent());
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log("screenshot:", screenshot);
  if (cls.includes("error")) throw new Error("the answer is an error: " + text);
  if (!text.trim()) throw new Error("empty answer");
  if (updates < 3) throw new Error("the answer did not stream");
  if (errors.length) throw new Error("page errors: " + errors.join("; "));
  console.log("OK");
} catch (e) {
  failed = true;
  console.error("FAIL:", e.message);
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
