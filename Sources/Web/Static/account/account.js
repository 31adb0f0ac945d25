// account: log in, sign up, log out, forgotten passwords (/account/forgot, /account/reset) and the
// email verification link (/account/verify). Errors from the server appear next to the field they name.
import { busy, clearFormErrors, showFormError } from '../shared/dom.js';

let off = [];
const PAGES = ['login', 'signup', 'logout', 'forgot', 'reset', 'verify'];

function view(ctx) {
  const page = ctx.segments[1] ?? 'login';
  const root = ctx.root;
  const title = root.querySelector('#account-title');
  root.querySelector('#login-form').hidden = page !== 'login';
  root.querySelector('#signup-form').hidden = page !== 'signup';
  root.querySelector('#forgot-form').hidden = page !== 'forgot';
  root.querySelector('#reset-form').hidden = page !== 'reset';
  root.querySelector('#verify-status').hidden = page !== 'verify';
  root.querySelector('#logout-status').hidden = page !== 'logout';
  const titles = {
    login: 'Log in', signup: 'Create your account', logout: 'Logging out', forgot: 'Forgot your password?',
    reset: 'Choose a new password', verify: 'Confirm your email address',
  };
  title.textContent = titles[page] ?? 'Log in';
  ctx.setTitle(title.textContent);
  const next = ctx.query.get('next');
  const intro = root.querySelector('#account-intro');
  intro.textContent = next?.startsWith('/invite/') ? 'Log in or create an account to join the group you were invited to.' : '';
  // Keep ?next= when switching between log in and sign up.
  for (const a of root.querySelectorAll('a[data-keep-next]')) {
    const url = new URL(a.getAttribute('href'), location.href);
    if (next) url.searchParams.set('next', next); else url.searchParams.delete('next');
    a.setAttribute('href', url.pathname + url.search);
  }
  if (page === 'reset') fillReset(ctx);
  if (page === 'verify') verify(ctx);
  if (page === 'logout') logout(ctx);
  else if (!PAGES.includes(page)) ctx.navigate('/account/login', { replace: true });
}

function fillReset(ctx) {
  const f = ctx.root.querySelector('#reset-form').elements;
  f.email.value = ctx.query.get('email') ?? f.email.value;
  f.code.value = ctx.query.get('code') ?? '';
  ctx.root.querySelector('#reset-sent').textContent = ctx.query.get('sent')
    ? 'If an account has this address, a code is on its way. It works for one hour.' : '';
}

let verifying = null;
async function verify(ctx) {
  const message = ctx.root.querySelector('#verify-message');
  const next = ctx.root.querySelector('#verify-continue');
  const key = ctx.query.toString();
  if (verifying === key) return;
  verifying = key;
  message.textContent = 'Confirming your address…';
  next.hidden = true;
  try {
    await ctx.api.call('users/VerifyEmail', { email: ctx.query.get('email') ?? '', code: ctx.query.get('code') ?? '' });
    message.textContent = `Thank you: ${ctx.query.get('email')} is confirmed.`;
    // Someone else's link (an admin following it from the mailbox) says nothing about this account.
    const mine = ctx.user && ctx.user.email?.toLowerCase() === (ctx.query.get('email') ?? '').toLowerCase();
    if (mine) ctx.setSession({ ...ctx.user, email_verified: true });
  } catch (err) {
    message.textContent = err.code === 429
      ? 'Too many attempts. Wait a minute, then open the link again.'
      : 'This link is invalid or has expired. Send a new one from Settings, Profile.';
  }
  next.setAttribute('href', ctx.user ? '/groups' : '/account/login');
  next.textContent = ctx.user ? 'Continue to your groups' : 'Log in';
  next.hidden = false;
}

async function logout(ctx) {
  try { await ctx.api.call('users/Logout', {}); } catch { /* the session may be gone already */ }
  ctx.setSession(null);
  ctx.navigate('/account/login', { replace: true });
}

function afterSignIn(ctx, user) {
  ctx.setSession(user);
  // navigate() stays on this site whatever `next` says.
  ctx.navigate(ctx.query.get('next') || '/groups', { replace: true });
}

window.verteilt.register('account', {
  beforeMount(ctx) {
    const login = ctx.root.querySelector('#login-form');
    const signup = ctx.root.querySelector('#signup-form');
    const onLogin = async (e) => {
      e.preventDefault();
      clearFormErrors(login);
      const account = login.elements.email.value.trim();
      const body = { password: login.elements.password.value };
      if (account.includes('@')) body.email = account; else body.username = account;
      await busy(login, async () => {
        try {
          const { user } = await ctx.api.call('users/Login', body);
          afterSignIn(ctx, user);
        } catch (err) {
          // "email: ..." names the field the user typed into.
          if (err.field === 'email' || err.field === 'username') err.field = 'email';
          showFormError(login, err);
        }
      });
    };
    const onSignup = async (e) => {
      e.preventDefault();
      clearFormErrors(signup);
      const f = signup.elements;
      const body = { first_name: f.first_name.value, last_name: f.last_name.value, email: f.email.value.trim(), password: f.password.value };
      await busy(signup, async () => {
        try {
          const { user } = await ctx.api.call('users/Create', body);
          afterSignIn(ctx, user);
        } catch (err) {
          showFormError(signup, err);
        }
      });
    };
    const forgot = ctx.root.querySelector('#forgot-form');
    const reset = ctx.root.querySelector('#reset-form');
    const onForgot = async (e) => {
      e.preventDefault();
      clearFormErrors(forgot);
      const email = forgot.elements.email.value.trim();
      await busy(forgot, async () => {
        try {
          await ctx.api.call('users/SendPasswordReset', { email });
          ctx.navigate(`/account/reset?sent=1&email=${encodeURIComponent(email)}`);
        } catch (err) { showFormError(forgot, err); }
      });
    };
    const onReset = async (e) => {
      e.preventDefault();
      clearFormErrors(reset);
      const f = reset.elements;
      const email = f.email.value.trim();
      const body = { email, code: f.code.value.trim(), new_password: f.new_password.value };
      await busy(reset, async () => {
        try {
          await ctx.api.call('users/ResetPassword', body);
          // Every session ended with the reset: sign in again with the new password.
          const { user } = await ctx.api.call('users/Login', { email, password: body.new_password });
          ctx.announce?.('Password changed');
          afterSignIn(ctx, user);
        } catch (err) { showFormError(reset, err); }
      });
    };
    login.addEventListener('submit', onLogin);
    signup.addEventListener('submit', onSignup);
    forgot.addEventListener('submit', onForgot);
    reset.addEventListener('submit', onReset);
    off = [
      () => login.removeEventListener('submit', onLogin), () => signup.removeEventListener('submit', onSignup),
      () => forgot.removeEventListener('submit', onForgot), () => reset.removeEventListener('submit', onReset),
    ];
    view(ctx);
  },
  mount(ctx) {
    const first = ctx.root.querySelector('form:not([hidden]) input');
    first?.focus();
  },
  update(ctx) {
    for (const form of ctx.root.querySelectorAll('form')) clearFormErrors(form);
    view(ctx);
    ctx.root.querySelector('form:not([hidden]) input')?.focus();
  },
  unmount() {
    for (const fn of off) fn();
    off = [];
    verifying = null;
  },
});

