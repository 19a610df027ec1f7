// The newcomer's walk through `tollgate demo`, in headless Chromium (Debian's, driven by
// playwright-core): sign in as the demo user (after a wrong password), ask the wine service
// for red wine, land on the shop already recognised, buy two items, leave; compare two book
// shops side by side and leave both; read her own statement; open the console and find the session with its duration
// and the user's statement with the time charge and both items; a visit to a shop's landing
// URL without a token is refused. A screenshot of each step goes to OUT_DIR.
//
// Usage: node demo.mjs CLIENT_URL CONSOLE_URL OPERATOR_KEY LANDING_URL OUT_DIR CHROMIUM
import { chromium } from "playwright-core";
import path from "node:path";

const [clientUrl, consoleUrl, operatorKey, landingUrl, outDir, executablePath] = process.argv.slice(2);
const TIMEOUT = 20000;
let step = 0;

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--no-first-run"],
});
const shot = async (page, name) => {
  step += 1;
  const file = path.join(outDir, `${String(step).padStart(2, "0")}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  console.log("screenshot", file);
};
const expectText = async (locator, text) => {
  await locator.filter({ hasText: text }).first().waitFor({ timeout: TIMEOUT });
};

try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on("console", (m) => console.log("page:", m.text()));

  // A wrong password is said in words.
  await page.goto(clientUrl);
  await page.fill("#user", "alice");
  await page.fill("#password", "not-the-password");
  await page.click("#signin-button");
  await expectText(page.locator("#status"), "Wrong user name or password");
  await shot(page, "wrong-password");

  await page.fill("#password", "secret");
  await page.click("#signin-button");
  await page.locator("#call").waitFor({ state: "visible" });
  await shot(page, "signed-in");

  // Red wine from the wine service: the shop opens with alice already recognised.
  await page.selectOption("#service", { label: "wine@portal.com" });
  await page.fill("#request", "red wine");
  await page.click("#call-button");
  const shop = page.frameLocator("iframe[title=shop]");
  await expectText(shop.locator("#user"), "alice");
  await expectText(shop.locator("#asked"), "red wine");
  await shot(page, "wine-shop");

  // Two items bought.
  await shop.locator("button[data-item=rioja]").click();
  await shop.locator("#bought li").nth(0).waitFor();
  await shop.locator("button[data-item=chianti]").click();
  await shop.locator("#bought li").nth(1).waitFor();
  await shot(page, "bought-two");

  // End the visit: BYE.
  await page.click("button.leave");
  await expectText(page.locator("#status"), "You left the shop");
  await page.locator("iframe[title=shop]").waitFor({ state: "detached" });
  await shot(page, "left");

  // Two book shops answer: side by side; leave one, then the other.
  await page.selectOption("#service", { label: "books@portal.com (compare shops)" });
  await page.fill("#request", "books");
  await page.click("#call-button");
  await page.locator("iframe[title=shop]").nth(1).waitFor();
  await expectText(page.frameLocator("iframe[title=shop] >> nth=0").locator("#user"), "alice");
  await expectText(page.frameLocator("iframe[title=shop] >> nth=1").locator("#user"), "alice");
  await shot(page, "two-book-shops");
  await page.locator("button.leave").first().click();
  await page.waitForFunction(() => document.querySelectorAll("iframe[title=shop]").length === 1);
  await page.locator("button.leave").first().click();
  await page.waitForFunction(() => document.querySelectorAll("iframe[title=shop]").length === 0);

  // Alice reads her own statement (signed in with her SIP name and password).
  await page.click("#my-statement-button");
  await expectText(page.locator("#my-statement-lines tbody tr"), "Rioja Reserva");
  await expectText(page.locator("#my-statement-lines tbody tr"), "wine@portal.com");
  await shot(page, "my-statement");

  // The console: the wine session with its duration, and alice's statement.
  await page.goto(consoleUrl);
  await page.fill("#key", operatorKey);
  await page.click("#login-button");
  const wineRow = page.locator("#recent tbody tr").filter({ hasText: "wine@portal.com" }).filter({ hasText: "terminated" });
  await wineRow.first().waitFor();
  const cells = await wineRow.first().locator("td").allTextContents();
  if (!/^\d+\.\d s$/.test(cells[6])) throw new Error("no duration in the session row: " + cells.join(" | "));
  console.log("session row:", cells.join(" | "));
  await page.locator("#charts svg").first().waitFor();
  await shot(page, "console");
  await page.click("button.statement-button[data-user=alice]");
  const lines = page.locator("#statement-lines tbody tr");
  await expectText(lines, "Rioja Reserva");
  await expectText(lines, "Chianti Classico");
  const timeRow = lines.filter({ hasText: "wine@portal.com" });
  await timeRow.first().waitFor();
  const time = await timeRow.first().locator("td").allTextContents();
  if (time[0] !== "time" || !/EUR$/.test(time[3])) throw new Error("no time charge: " + time.join(" | "));
  console.log("time charge:", time.join(" | "));
  await shot(page, "statement");

  // No token, no entry: a fresh browser goes straight to the landing URL.
  const stranger = await browser.newContext();
  const straight = await stranger.newPage();
  const resp = await straight.goto(landingUrl);
  if (resp.status() !== 403) throw new Error("the landing URL without a token answered " + resp.status());
  await expectText(straight.locator("#refused"), "Access refused");
  await shot(straight, "refused-without-token");
  console.log("browser demo: ok");
} finally {
  await browser.close();
}
