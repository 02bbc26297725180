// The account page in headless Chromium at phone size, JavaScript off, against the demo: the
// portal's link to it, the sessions (this device and another one, which the test made), ending
// the other one, a new password (other devices signed out, this one stays), and a sign-in with it.
// Usage: node account.mjs BASE_URL LOGIN PASSWORD NEW_PASSWORD SCREENSHOT_DIR
import { fail, launch, phoneContext, screenshot } from './chromium.mjs';

const [base, login, password, newPassword, shots] = process.argv.slice(2);
const shot = screenshot(shots);

const browser = await launch();
try {
  const context = await phoneContext(browser);
  const page = await context.newPage();
  await page.goto(`${base}/`);
  await page.fill('#login', login);
  await page.fill('#password', password);
  await Promise.all([page.waitForURL(`${base}/`), page.click('button[type=submit]')]);
  await Promise.all([page.waitForURL(/\/_portcullis\/account$/), page.click('#account')]);

  const sessions = page.locator('li.session');
  if (await sessions.count() !== 2) fail(`expected 2 sessions, saw ${await sessions.count()}`);
  const mine = page.locator('li.session', { hasText: 'This device' });
  if (await mine.count() !== 1) fail('no session marked "This device"');
  if (await mine.locator('button').count() !== 0) fail('this device has an End button');
  for (const part of ['h1', '#sessions', '#change-password form', '#activity']) {
    const box = await page.locator(part).first().boundingBox();
    if (!box || box.x < 0 || box.x + box.width > 390) fail(`${part} does not fit the phone: ${JSON.stringify(box)}`);
  }
  await shot(page, 'account');

  // End the other one.
  const other = page.locator('li.session', { hasNotText: 'This device' });
  await Promise.all([page.waitForURL(/\?ended=1$/), other.locator('button', { hasText: 'End' }).click()]);
  if (!(await page.textContent('.alert.notice')).includes('The session has ended')) fail('no notice after End');
  if (await page.locator('li.session').count() !== 1) fail('the other session is still listed');

  // A new password: this session stays.
  await page.fill('#current', password);
  await page.fill('#password', newPassword);
  await page.fill('#password2', newPassword);
  await Promise.all([page.waitForURL(/\?changed=1$/), page.click('#change-password button[type=submit]')]);
  const notice = await page.textContent('.alert.notice');
  if (!notice.includes('Your password has been changed. Your other devices were signed out')) fail(`notice: ${notice}`);
  await shot(page, 'account-password-changed');
  await page.goto(`${base}/`);
  if (!(await page.content()).includes(`<th>x-remote-user</th><td>${login}</td>`)) fail('signed out by the change');

  // Sign out, and in with the new password.
  await Promise.all([page.waitForURL(/signed_out=1/), page.click('form[action="/_portcullis/logout"] button')]);
  await page.fill('#login', login);
  await page.fill('#password', newPassword);
  await Promise.all([page.waitForURL(`${base}/`), page.click('button[type=submit]')]);
  console.log('ok: ended another session and changed the password on the account page');
} finally {
  await browser.close();
}
