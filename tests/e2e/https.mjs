// Signs in over HTTPS in headless Chromium: the login page, the form and the portal over
// HTTP/2 and TLS 1.3, with Secure __Host- cookies and HSTS. The certificate is from the test's
// own CA, which Chromium does not know: certificate errors are ignored for this context only.
// Usage: node https.mjs BASE_URL LOGIN PASSWORD SCREENSHOT_DIR
import { launch, fail, screenshot } from './chromium.mjs';

const [base, login, password, shots] = process.argv.slice(2);
const shot = screenshot(shots);

const browser = await launch();
try {
  const context = await browser.newContext({
    viewport: { width: 390, height: 844 }, javaScriptEnabled: false, ignoreHTTPSErrors: true,
  });
  const page = await context.newPage();
  const first = await page.goto(`${base}/reports`);
  if (!page.url().startsWith(`${base}/_portcullis/login?rd=%2Freports`)) fail(`not sent to login: ${page.url()}`);
  const tls = await first.securityDetails();
  if (!tls || tls.protocol !== 'TLS 1.3') fail(`not TLS 1.3: ${JSON.stringify(tls)}`);
  const hsts = (await first.allHeaders())['strict-transport-security'];
  if (hsts !== 'max-age=31536000') fail(`no HSTS: ${hsts}`);
  await shot(page, 'https-login');

  await page.fill('#login', login);
  await page.fill('#password', password);
  const [landed] = await Promise.all([
    page.waitForResponse((r) => r.url() === `${base}/reports`),
    page.click('button[type=submit]'),
  ]);
  if (landed.status() !== 200) fail(`portal answered ${landed.status()}`);
  const body = await page.content();
  if (!body.includes('x-remote-user') || !body.includes(login)) fail(`no identity at the portal: ${body.slice(0, 400)}`);
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === '__Host-portcullis_session');
  if (!session || !session.secure || !session.httpOnly || session.path !== '/') fail(`bad session cookie: ${JSON.stringify(cookies)}`);
  if (cookies.some((c) => !c.name.startsWith('__Host-'))) fail(`a cookie without __Host-: ${JSON.stringify(cookies)}`);

  // The protocol, as the page's own timing says (a second context: scripts run there).
  const scripted = await browser.newContext({ ignoreHTTPSErrors: true });
  await scripted.addCookies(cookies);
  const probe = await scripted.newPage();
  await probe.goto(`${base}/reports`);
  const protocol = await probe.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol);
  if (protocol !== 'h2') fail(`not HTTP/2: ${protocol}`);
  await scripted.close();
  console.log('ok: signed in over HTTPS (TLS 1.3, HTTP/2) with __Host- cookies and HSTS');
} finally {
  await browser.close();
}
