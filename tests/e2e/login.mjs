// Signs in through the real login page in headless Chromium and checks that the browser lands
// on the portal with the identity the gateway sent. Usage: node login.mjs BASE_URL LOGIN PASSWORD SCREENSHOT_DIR
import { chromium } from 'playwright-core';

const [base, login, password, shots] = process.argv.slice(2);
const fail = (msg) => { console.error(`FAIL: ${msg}`); process.exit(1); };

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage({ viewport: { width: 390, height: 844 } });
  // No JavaScript on the gateway's pages: they must work without it.
  const context = page.context();
  await page.goto(`${base}/reports?year=2026`);
  if (!page.url().includes('/_portcullis/login?rd=%2Freports%3Fyear%3D2026')) fail(`not sent to login: ${page.url()}`);
  if (shots) await page.screenshot({ path: `${shots}/login.png`, fullPage: true });

  await page.fill('#login', login);
  await page.fill('#password', 'wrong password');
  await page.click('button[type=submit]');
  const error = await page.textContent('.alert.error');
  if (!error || !error.includes('Incorrect login or password')) fail(`no error shown: ${error}`);

  await page.fill('#password', password);
  await page.check('input[name=remember]');
  await Promise.all([page.waitForURL(`${base}/reports?year=2026`), page.click('button[type=submit]')]);
  const welcome = await page.textContent('#welcome');
  if (!welcome.includes('Demo User')) fail(`portal did not greet the user: ${welcome}`);
  const html = await page.content();
  if (!html.includes('<th>x-remote-user</th><td>demo</td>')) fail('identity header missing on the portal page');
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === 'portcullis_session');
  if (!session || !session.httpOnly || session.sameSite !== 'Lax') fail(`bad session cookie: ${JSON.stringify(session)}`);
  if (shots) await page.screenshot({ path: `${shots}/portal.png`, fullPage: true });

  // Sign out with the portal's button and land on the login page.
  await Promise.all([page.waitForURL(/\/_portcullis\/login\?signed_out=1/), page.click('button[type=submit]')]);
  const notice = await page.textContent('.alert.notice');
  if (!notice.includes('You have signed out')) fail(`no sign-out notice: ${notice}`);
  await page.goto(`${base}/`);
  if (!page.url().includes('/_portcullis/login')) fail('still signed in after sign-out');
  console.log('ok: signed in through the login page and reached the portal');
} finally {
  await browser.close();
}
