// Two-step verification in headless Chromium at phone size: signs in, follows the portal's
// link to the setup page, reads the key off the page, confirms it with a code from `oathtool`,
// keeps the backup codes, signs out, and signs in again with the password and a code.
// Usage: node two_factor.mjs BASE_URL LOGIN PASSWORD SCREENSHOT_DIR
import { execFileSync } from 'node:child_process';
import { chromium } from 'playwright-core';

const [base, login, password, shots] = process.argv.slice(2);
const fail = (msg) => { console.error(`FAIL: ${msg}`); process.exit(1); };
const PERIOD = 30;
const code = (secret, step) =>
  execFileSync('oathtool', ['--totp', '-b', '-N', `@${step * PERIOD}`, secret]).toString().trim();
const shot = async (page, name) => { if (shots) await page.screenshot({ path: `${shots}/${name}.png`, fullPage: true }); };

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  // No JavaScript: the gateway's pages must work without it.
  const context = await browser.newContext({ viewport: { width: 390, height: 844 }, javaScriptEnabled: false });
  const page = await context.newPage();
  await page.goto(`${base}/`);
  await page.fill('#login', login);
  await page.fill('#password', password);
  await Promise.all([page.waitForURL(`${base}/`), page.click('button[type=submit]')]);

  // The portal's link to the setup page: the QR code, the key, the form.
  await Promise.all([page.waitForURL(/\/_portcullis\/2fa\/setup$/), page.click('#two-step')]);
  const qr = await page.locator('.qr svg').boundingBox();
  if (!qr || qr.width < 150 || qr.x < 0 || qr.x + qr.width > 390) fail(`the QR code does not fit the phone: ${JSON.stringify(qr)}`);
  const grouped = (await page.textContent('#secret')).trim();
  if (!/^([A-Z2-7]{4} )+[A-Z2-7]{1,4}$/.test(grouped)) fail(`the key is not in groups of four: ${grouped}`);
  const secret = grouped.replaceAll(' ', '');
  const field = page.locator('#code');
  if (await field.getAttribute('autocomplete') !== 'one-time-code' || await field.getAttribute('inputmode') !== 'numeric') {
    fail('the code field does not ask for a one-time code on a numeric keyboard');
  }
  for (const part of ['#secret', 'form', 'h1']) {
    const box = await page.locator(part).boundingBox();
    if (!box || box.x < 0 || box.x + box.width > 390) fail(`${part} does not fit the phone: ${JSON.stringify(box)}`);
  }
  await shot(page, 'two-factor-setup');

  const enrolStep = Math.floor(Date.now() / 1000 / PERIOD);
  await field.fill(code(secret, enrolStep));
  await page.click('button[type=submit]');
  const codes = await page.locator('ul.codes code').allTextContents();
  if (codes.length !== 10 || !codes.every((c) => /^[a-z2-9]{5}-[a-z2-9]{5}$/.test(c))) fail(`backup codes: ${codes}`);
  await shot(page, 'two-factor-backup-codes');
  await Promise.all([page.waitForURL(`${base}/`), page.click('a.button')]);

  // Sign out; the password leads to the code step, the next period's code signs in.
  await Promise.all([page.waitForURL(/\/_portcullis\/login\?signed_out=1/), page.click('form[action="/_portcullis/logout"] button')]);
  await page.goto(`${base}/reports`);
  await page.fill('#login', login);
  await page.fill('#password', password);
  await page.check('input[name=remember]');
  await Promise.all([page.waitForURL(/\/_portcullis\/2fa\?rd=%2Freports$/), page.click('button[type=submit]')]);
  const prompt = await page.textContent('.sub');
  if (!prompt.includes('Enter the code from your authenticator app')) fail(`prompt: ${prompt}`);
  const pending = (await context.cookies()).find((c) => c.name === 'portcullis_session_pending');
  if (!pending || !pending.httpOnly) fail(`the pending sign-in is not an HttpOnly cookie: ${JSON.stringify(pending)}`);
  await shot(page, 'two-factor-code');

  await page.fill('#code', '000000' === code(secret, enrolStep + 1) ? '111111' : '000000');
  await page.click('button[type=submit]');
  const error = await page.textContent('.alert.error');
  if (!error.includes('Incorrect code')) fail(`no error for a wrong code: ${error}`);
  await page.fill('#code', code(secret, enrolStep + 1));
  await Promise.all([page.waitForURL(`${base}/reports`), page.click('button[type=submit]')]);
  const html = await page.content();
  if (!html.includes('<th>x-remote-user</th><td>demo</td>')) fail('not on the portal as demo after the code');
  const cookies = await context.cookies();
  if (!cookies.find((c) => c.name === 'portcullis_session_remember')) fail('"Stay signed in" was not honoured');
  if (cookies.find((c) => c.name === 'portcullis_session_pending')) fail('the pending sign-in outlived the sign-in');
  console.log('ok: enrolled from the page, signed in with a code from oathtool');
} finally {
  await browser.close();
}
