// Password recovery in headless Chromium at phone size, JavaScript off, against the demo: the
// login page's "Forgot your password?", the demo's outbox (its mail is written to .eml files),
// the e-mail itself as a mail program would show its HTML, the link, the new password twice,
// the login page's notice, and a sign-in with the new password; the used link is dead.
// Usage: node recovery.mjs BASE_URL LOGIN OUTBOX_DIR SCREENSHOT_DIR
import { readdirSync, readFileSync } from 'node:fs';
import { fail, launch, phoneContext, screenshot } from './chromium.mjs';

const [base, login, outbox, shots] = process.argv.slice(2);
const shot = screenshot(shots);
const NEW_PASSWORD = 'a new passphrase for the demo';

// The HTML part of the newest message, decoded from quoted-printable.
const newestMailHtml = () => {
  const files = readdirSync(outbox).filter((f) => f.endsWith('.eml')).sort();
  if (files.length === 0) fail('no message in the outbox');
  const raw = readFileSync(`${outbox}/${files[files.length - 1]}`, 'latin1');
  const part = raw.split(/\r?\n--/).find((p) => /Content-Type: text\/html/i.test(p));
  if (!part) fail('the message has no HTML part');
  const body = part.split(/\r?\n\r?\n/).slice(1).join('\n\n').replace(/=\r?\n/g, '');
  const bytes = Buffer.from(body.replace(/=([0-9A-F]{2})/g, (_, h) => String.fromCharCode(parseInt(h, 16))), 'latin1');
  return bytes.toString('utf8');
};

const fits = async (page, selectors) => {
  for (const part of selectors) {
    const box = await page.locator(part).first().boundingBox();
    if (!box || box.x < 0 || box.x + box.width > 390) fail(`${part} does not fit the phone: ${JSON.stringify(box)}`);
  }
};

const browser = await launch();
try {
  const context = await phoneContext(browser);
  const page = await context.newPage();
  await page.goto(`${base}/`);
  await Promise.all([page.waitForURL(/\/_portcullis\/forgot$/), page.click('text=Forgot your password?')]);
  await page.fill('#login', login);
  await fits(page, ['h1', 'form', '#login']);
  await shot(page, 'recovery-forgot');
  await page.click('button[type=submit]');
  const sent = await page.textContent('.alert.notice');
  if (!sent.includes('If this account exists, we have sent instructions to its e-mail address')) fail(`answer: ${sent}`);

  // The demo's outbox lists the message; the sender writes it in the background.
  let link = null;
  for (let i = 0; i < 50 && !link; i++) {
    await page.goto(`${base}/outbox/`);
    link = await page.locator('a.reset-link').first().getAttribute('href').catch(() => null);
    if (!link) await page.waitForTimeout(100);
  }
  if (!link || !link.startsWith(`${base}/_portcullis/reset?token=`)) fail(`no reset link in the outbox: ${link}`);

  // The e-mail as a mail program shows it: no images, no scripts, the link as a button.
  const mail = await context.newPage();
  await mail.setContent(newestMailHtml());
  const button = await mail.locator('a', { hasText: 'Choose a new password' }).getAttribute('href');
  if (button !== link) fail(`the e-mail's button leads elsewhere: ${button}`);
  if (await mail.locator('img, script').count() !== 0) fail('the e-mail has images or scripts');
  await shot(mail, 'recovery-mail');
  await mail.close();

  await page.goto(link);
  await fits(page, ['h1', 'form', '#password', '#password2']);
  await page.fill('#password', NEW_PASSWORD);
  await page.fill('#password2', 'not the same');
  await page.click('button[type=submit]');
  const mismatch = await page.textContent('.alert.error');
  if (!mismatch.includes('Passwords do not match')) fail(`no mismatch error: ${mismatch}`);
  await page.fill('#password', NEW_PASSWORD);
  await page.fill('#password2', NEW_PASSWORD);
  await shot(page, 'recovery-reset');
  await Promise.all([page.waitForURL(/\/_portcullis\/login\?reset=1$/), page.click('button[type=submit]')]);
  const notice = await page.textContent('.alert.notice');
  if (!notice.includes('Your password has been changed. Sign in with your new password')) fail(`notice: ${notice}`);

  await page.fill('#login', login);
  await page.fill('#password', NEW_PASSWORD);
  await Promise.all([page.waitForURL(`${base}/`), page.click('button[type=submit]')]);
  if (!(await page.content()).includes(`<th>x-remote-user</th><td>${login}</td>`)) fail('not on the portal after the reset');

  await page.goto(link);
  const dead = await page.textContent('.alert.error');
  if (!dead.includes('Invalid checkword. Request a new link')) fail(`a used link still works: ${dead}`);
  console.log('ok: reset the password through the e-mailed link and signed in with it');
} finally {
  await browser.close();
}
