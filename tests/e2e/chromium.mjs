// Debian's Chromium, headless, for the browser tests: a phone-sized context with JavaScript off
// (the gateway's pages must work without it), and a helper for screenshots.
import { chromium } from 'playwright-core';

export const PHONE = { width: 390, height: 844 };

export const launch = () => chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

export const phoneContext = (browser) => browser.newContext({ viewport: PHONE, javaScriptEnabled: false });

export const fail = (msg) => { console.error(`FAIL: ${msg}`); process.exit(1); };

export const screenshot = (dir) => async (page, name) => {
  if (dir) await page.screenshot({ path: `${dir}/${name}.png`, fullPage: true });
};
