// account: log in, sign up, log out. Errors from the server appear next to the field they name.
import { busy, clearFormErrors, showFormError } from '../shared/dom.js';

let off = [];

function view(ctx) {
  const page = ctx.segments[1] ?? 'login';
  const root = ctx.root;
  const login = root.querySelector('#login-form');
  const signup = root.querySelector('#signup-form');
  const title = root.querySelector('#account-title');
  login.hidden = page !== 'login';
  signup.hidden = page !== 'signup';
  root.querySelector('#logout-status').hidden = page !== 'logout';
  const titles = { login: 'Log in', signup: 'Create your account', logout: 'Logging out' };
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
  if (page === 'logout') logout(ctx);
  else if (!['login', 'signup'].includes(page)) ctx.navigate('/account/login', { replace: true });
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
    login.addEventListener('submit', onLogin);
    signup.addEventListener('submit', onSignup);
    off = [() => login.removeEventListener('submit', onLogin), () => signup.removeEventListener('submit', onSignup)];
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
  },
});

