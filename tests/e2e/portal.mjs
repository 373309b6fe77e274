// The supervisor portal in a real browser (Debian's Chromium through playwright-core), driven
// by tests/portal.rs, which starts the gateway, makes the call and checks what this reports.
//
// env: BASE (http://127.0.0.1:PORT), USER, PASSWORD, NUMBER (the caller's), REC (recording id),
//      OUT_DOWNLOAD, OUT_PLAYED (where to save the downloaded WAV and the bytes the player got)
// stdout: one JSON object; any failed step prints it and exits 1.
import { chromium } from 'playwright-core';
import { writeFileSync } from 'node:fs';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`missing env ${k}`);
  return v;
};
const must = (cond, what) => {
  if (!cond) throw new Error(`check failed: ${what}`);
};

let browser;
const report = {};
try {
  const [base, user, password, number, rec] = ['BASE', 'USER', 'PASSWORD', 'NUMBER', 'REC'].map(env);
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox'], // CI runs as root
  });
  const context = await browser.newContext({ acceptDownloads: true });
  const page = await context.newPage();
  page.setDefaultTimeout(15000);

  // Not signed in: the portal sends us to the sign-in page.
  await page.goto(`${base}/recordings`);
  must(new URL(page.url()).pathname === '/login', `redirected to /login, at ${page.url()}`);

  // A wrong password is refused with a message.
  await page.fill('#name', user);
  await page.fill('#password', 'not the password at all');
  await page.click('#signin');
  report.wrong_password_message = (await page.textContent('#error')).trim();
  must(report.wrong_password_message.includes('Wrong name or password'), 'wrong password message');

  // Sign in; land on the search page.
  await page.fill('#name', user);
  await page.fill('#password', password);
  await page.click('#signin');
  await page.waitForURL(/\/recordings$/);
  report.who = (await page.textContent('#who')).trim();

  // Search by the caller's number, as typed by a person (spaces, national form).
  await page.fill('#number', number);
  await page.click('#search');
  const row = page.locator(`tr[data-recording="${rec}"]`);
  must((await row.count()) === 1, `search lists ${rec}`);
  report.search_count = (await page.textContent('#count')).trim();

  // Open it and play it in the page's <audio> element.
  await row.locator('a').click();
  await page.waitForURL(new RegExp(`/recordings/${rec}$`));
  report.played = await page.evaluate(async () => {
    const p = document.querySelector('#player');
    await p.play();
    const t0 = Date.now();
    while (!p.ended && p.currentTime < 1.0 && Date.now() - t0 < 10000) {
      await new Promise((r) => setTimeout(r, 100));
    }
    return { duration: p.duration, currentTime: p.currentTime, error: p.error && p.error.code, paused: p.paused };
  });
  must(report.played.error === null, `player error ${report.played.error}`);
  must(report.played.currentTime >= 1.0, `playback advanced (${report.played.currentTime} s)`);

  // The bytes the player is served (same session, same grant), and a download by the link.
  // (Through the context's request API: the page's CSP allows no script fetches.)
  const res = await page.request.get(`${base}/recordings/${rec}/audio.wav`);
  must(res.status() === 200, `audio status ${res.status()}`);
  report.played_type = res.headers()['content-type'];
  writeFileSync(env('OUT_PLAYED'), await res.body());
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download')]);
  report.download_name = download.suggestedFilename();
  await download.saveAs(env('OUT_DOWNLOAD'));

  // Tag it for training with a note.
  await page.selectOption('#add-tag', 'training');
  await page.fill('#note', 'good handling of a distressed caller');
  await page.click('#add');
  report.tag_message = (await page.textContent('#message')).trim();
  must((await page.locator('li[data-tag="training"]').count()) === 1, 'training tag listed');

  // Sign out: the session is gone.
  await page.click('#logout');
  await page.waitForURL(/\/login$/);
  await page.goto(`${base}/recordings/${rec}`);
  must(new URL(page.url()).pathname === '/login', 'signed out');
  report.ok = true;
  console.log(JSON.stringify(report));
  await browser.close();
  process.exit(0);
} catch (err) {
  report.ok = false;
  report.error = String(err && err.stack ? err.stack : err);
  console.log(JSON.stringify(report));
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
}
