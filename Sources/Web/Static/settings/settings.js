// settings: profile, password, sessions (revoke). /settings/{profile|password|sessions}.
import { busy, clearFormErrors, h, showFormError } from '../shared/dom.js';

const TABS = ['profile', 'password', 'sessions'];
let off = [];

function tabOf(ctx) {
  const tab = ctx.segments[1] ?? 'profile';
  return TABS.includes(tab) ? tab : 'profile';
}

async function show(ctx) {
  const tab = tabOf(ctx);
  for (const a of ctx.root.querySelectorAll('[data-tab]')) {
    if (a.dataset.tab === tab) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  for (const p of ctx.root.querySelectorAll('[data-panel]')) p.hidden = p.dataset.panel !== tab;
  for (const f of ctx.root.querySelectorAll('form')) { clearFormErrors(f); f.querySelector('.form-ok').textContent = ''; }
  ctx.setTitle(`Settings: ${tab}`);
  if (tab === 'profile') fillProfile(ctx);
  if (tab === 'sessions') await loadSessions(ctx);
}

function fillProfile(ctx) {
  const f = ctx.root.querySelector('#profile-form').elements;
  const u = ctx.user;
  f.first_name.value = u.first_name ?? '';
  f.last_name.value = u.last_name ?? '';
  f.username.value = u.username ?? '';
  f.email.value = u.email ?? '';
  f.old_password.value = '';
  ctx.root.querySelector('#profile-old-password-field').hidden = true;
  const status = ctx.root.querySelector('#profile-email-status');
  status.textContent = u.email_verified ? 'Confirmed.' : 'Not confirmed yet: open the link we mailed to this address.';
  ctx.root.querySelector('#resend-verification').hidden = !!u.email_verified;
}

const when = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

async function loadSessions(ctx) {
  const list = ctx.root.querySelector('#session-list');
  const error = ctx.root.querySelector('#sessions-error');
  error.textContent = '';
  try {
    const { sessions } = await ctx.api.call('users/ListSessions', {});
    list.replaceChildren(...sessions.map((s) => {
      const label = s.user_agent ? s.user_agent.slice(0, 80) : 'Unknown device';
      const revoke = h('button', { type: 'button', class: 'danger', onclick: async () => {
        revoke.disabled = true;
        try {
          await ctx.api.call('users/RevokeSession', { id: s.id });
          ctx.announce('Session revoked');
          await loadSessions(ctx);
        } catch (e) { error.textContent = e.detail; revoke.disabled = false; }
      } }, 'Revoke');
      revoke.setAttribute('aria-label', `Revoke session on ${label}`);
      return h('li', { dataset: { sessionId: s.id } },
        h('div', {}, h('div', {}, label, s.current ? ' (this device)' : ''),
          h('div', { class: 'meta' }, `Last used ${when.format(new Date(s.last_used_at))}`)),
        s.current ? h('span', { class: 'meta' }, 'Current') : revoke);
    }));
  } catch (e) { error.textContent = e.detail; }
}

window.verteilt.register('settings', {
  async beforeMount(ctx) {
    const profile = ctx.root.querySelector('#profile-form');
    const password = ctx.root.querySelector('#password-form');
    const onEmail = () => {
      ctx.root.querySelector('#profile-old-password-field').hidden = profile.elements.email.value.trim() === (ctx.user.email ?? '');
    };
    const onProfile = async (e) => {
      e.preventDefault();
      clearFormErrors(profile);
      const f = profile.elements;
      const u = ctx.user;
      const body = {};
      if (f.first_name.value !== u.first_name) body.first_name = f.first_name.value;
      if (f.last_name.value !== (u.last_name ?? '')) body.last_name = f.last_name.value;
      if (f.username.value.trim() !== (u.username ?? '') && f.username.value.trim()) body.username = f.username.value.trim();
      if (f.email.value.trim() !== (u.email ?? '')) { body.email = f.email.value.trim(); body.old_password = f.old_password.value; }
      if (!Object.keys(body).length) { profile.querySelector('.form-ok').textContent = 'Nothing to save.'; return; }
      await busy(profile, async () => {
        try {
          const { user } = await ctx.api.call('users/Update', body);
          ctx.setSession(user);
          fillProfile(ctx);
          profile.querySelector('.form-ok').textContent = 'Saved.';
        } catch (err) { showFormError(profile, err); }
      });
    };
    const onPassword = async (e) => {
      e.preventDefault();
      clearFormErrors(password);
      const f = password.elements;
      await busy(password, async () => {
        try {
          await ctx.api.call('users/Update', { password: f.password.value, old_password: f.old_password.value });
          password.reset();
          password.querySelector('.form-ok').textContent = 'Password changed. Your other devices were signed out.';
        } catch (err) {
          // A wrong current password is a 403 without a field name.
          if (err.code === 403 && !err.field) err.field = 'old_password';
          showFormError(password, err);
        }
      });
    };
    const resend = ctx.root.querySelector('#resend-verification');
    const onResend = async () => {
      const status = ctx.root.querySelector('#profile-email-status');
      resend.disabled = true;
      try {
        await ctx.api.call('users/SendVerificationEmail', {});
        status.textContent = `A new confirmation mail is on its way to ${ctx.user.email}.`;
      } catch (err) {
        status.textContent = err.code === 409 ? 'Confirmed.' : err.detail.charAt(0).toUpperCase() + err.detail.slice(1);
      } finally { resend.disabled = false; }
    };
    resend.addEventListener('click', onResend);
    profile.addEventListener('submit', onProfile);
    password.addEventListener('submit', onPassword);
    profile.elements.email.addEventListener('input', onEmail);
    off = [
      () => resend.removeEventListener('click', onResend),
      () => profile.removeEventListener('submit', onProfile),
      () => password.removeEventListener('submit', onPassword),
      () => profile.elements.email.removeEventListener('input', onEmail),
    ];
    await show(ctx);
  },
  update: show,
  unmount() {
    for (const fn of off) fn();
    off = [];
  },
});
