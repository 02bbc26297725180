// The CAPTCHA step in headless Chromium, with the page's own markup only (no JavaScript on the
// gateway's pages): a wrong password brings the picture, which must load under the page's
// Content-Security-Policy; a wrong answer brings a new picture; the right answer signs in.
// Usage: node captcha.mjs BASE_URL LOGIN PASSWORD CAPTCHA_ID CAPTCHA_ANSWER SCREENSHOT_DIR
// (CAPTCHA_ID is a challenge the test put into the store, so it knows the answer.)
import { chromium } from 'playwright-core';

const [base, login, password, knownId, knownAnswer, shots] = process.argv.slice(2);
const fail = (msg) => { console.error(`FAIL: ${msg}`); process.exit(1); };

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const loadedWidth = (page) => page.$eval('img.captcha', (img) => img.complete ? img.naturalWidth : 0);
try {
  const page = await browser.newPage({ viewport: { width: 390, height: 844 } });
  await page.goto(`${base}/inbox`);
  await page.fill('#login', login);
  await page.fill('#password', 'wrong password');
  await page.click('button[type=submit]');
  if (!(await page.textContent('.alert.error')).includes('Incorrect login or password')) fail('no error shown');
  if ((await loadedWidth(page)) !== 240) fail('the CAPTCHA picture did not load');
  if (shots) await page.screenshot({ path: `${shots}/captcha.png`, fullPage: true });
  const first = await page.getAttribute('input[name=captcha_id]', 'value');

  await page.fill('#password', password);
  await page.fill('#captcha_answer', 'WRONG1');
  await page.click('button[type=submit]');
  if (!(await page.textContent('.alert.error')).includes('Enter the characters shown in the picture')) fail('no CAPTCHA message');
  const second = await page.getAttribute('input[name=captcha_id]', 'value');
  if (second === first) fail('the same challenge was offered again');
  if ((await loadedWidth(page)) !== 240) fail('the new CAPTCHA picture did not load');

  // Answer a challenge whose answer the test knows: put its id where the page's one was.
  await page.$eval('input[name=captcha_id]', (el, id) => { el.value = id; }, knownId);
  await page.fill('#password', password);
  await page.fill('#captcha_answer', knownAnswer.toLowerCase());
  await Promise.all([page.waitForURL(`${base}/inbox`), page.click('button[type=submit]')]);
  const echo = JSON.parse(await page.textContent('body'));
  const user = echo.headers.find(([name]) => name === 'x-remote-user');
  if (!user || user[1] !== login) fail(`portal did not get the identity: ${JSON.stringify(echo.headers)}`);
  console.log('ok: signed in through the CAPTCHA step');
} finally {
  await browser.close();
}
