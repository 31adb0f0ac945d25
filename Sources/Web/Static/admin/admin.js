// admin: for users with the admin role. /admin/mail[/{id}] the development mailbox (mail/List),
// /admin/runs[/{id}] the durable workflow runs (workflows/ListRuns, ReadRun, RetryRun, CancelRun).
// Filters live in the URL, so the back button and deep links work. The server checks the role on
// every call; a 403 shows the "not allowed" view. Mail HTML never enters this document: it is
// shown in a sandboxed frame (srcdoc, no scripts, no same origin).
import { clearFormErrors, h, showFormError } from '../shared/dom.js';

const TABS = { mail: 'Mailbox', runs: 'Workflow runs' };
const ACTIVE = ['queued', 'running', 'sleeping', 'waiting']; // CancelRun takes these
const RETRYABLE = ['failed', 'cancelled'];                    // RetryRun takes these
const PAGE = 50;
const MAX_MAILS = 500; // mail/List's largest limit

/** While mounted: what is loaded, and how to stop it. Null otherwise (the module outlives loads). */
let state = null;

function fresh() {
  return {
    controller: new AbortController(),
    off: [],
    checked: false, // the role was asked of the server on this load
    mail: { key: null, mails: [], transport: '', limit: PAGE, seq: 0, shown: null },
    runs: { key: null, list: [], more: false, seq: 0, detailSeq: 0, current: null, shown: null },
  };
}

const when = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
const time = (ts) => (ts ? h('time', { datetime: ts }, when.format(new Date(ts))) : '—');
const capital = (s) => s.charAt(0).toUpperCase() + s.slice(1);
const aborted = (e) => e?.name === 'AbortError' || state === null;

function on(el, type, fn) {
  el.addEventListener(type, fn);
  state.off.push(() => el.removeEventListener(type, fn));
}

/** API calls of this micro-frontend end when it is unloaded. */
function call(ctx, method, body) {
  return ctx.api.call(method, body, { signal: state.controller.signal });
}

/** A description list from [term, value] pairs; values are text or nodes, empty ones left out. */
function details(pairs) {
  return pairs.filter(([, v]) => v !== null && v !== undefined && v !== '')
    .flatMap(([term, value]) => [h('dt', {}, term), h('dd', {}, value)]);
}

/** `?a=b` of the filters that are set. */
function queryOf(params) {
  const q = new URLSearchParams(Object.entries(params).filter(([, v]) => v));
  return q.size ? `?${q}` : '';
}

// ---- access -----------------------------------------------------------------------------------
async function allowed(ctx) {
  if (ctx.isAdmin) return true;
  // The role may have been granted since the page loaded (or the sign-in answer had none): ask once.
  if (!state.checked) {
    state.checked = true;
    try { await ctx.refreshSession(); } catch { /* signed out: the orchestrator goes to the login */ }
  }
  return ctx.isAdmin;
}

function showDenied(ctx) {
  const $ = (s) => ctx.root.querySelector(s);
  $('#admin-title').textContent = 'Not allowed';
  ctx.setTitle('Not allowed');
  $('#admin-denied').hidden = false;
  $('#admin-tabs').hidden = true;
  for (const p of ctx.root.querySelectorAll('[data-panel]')) p.hidden = true;
}

/** The server's answer to a call; a 403 means the role is gone (or never was). */
function failed(ctx, e, show) {
  if (aborted(e)) return;
  if (e.code === 403) { showDenied(ctx); return; }
  show(e);
}

// ---- routing within /admin ---------------------------------------------------------------------
async function show(ctx) {
  if (!(await allowed(ctx))) { showDenied(ctx); return; }
  if (!state) return; // unloaded meanwhile
  const tab = ctx.segments[1];
  if (!(tab in TABS)) {
    // Not awaited: the orchestrator routes it after this load finishes.
    ctx.navigate(`/admin/mail${ctx.query.size ? `?${ctx.query}` : ''}`, { replace: true });
    return;
  }
  const $ = (s) => ctx.root.querySelector(s);
  $('#admin-title').textContent = 'Admin';
  $('#admin-denied').hidden = true;
  $('#admin-tabs').hidden = false;
  for (const a of ctx.root.querySelectorAll('[data-tab]')) {
    if (a.dataset.tab === tab) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  for (const p of ctx.root.querySelectorAll('[data-panel]')) p.hidden = p.dataset.panel !== tab;
  ctx.setTitle(`Admin: ${TABS[tab]}`);
  if (tab === 'mail') await showMail(ctx); else await showRuns(ctx);
}

// ---- mailbox ------------------------------------------------------------------------------------
async function showMail(ctx) {
  const to = ctx.query.get('to') ?? '';
  const form = ctx.root.querySelector('#mail-filter');
  form.elements.to.value = to;
  ctx.root.querySelector('#mail-back').setAttribute('href', `/admin/mail${queryOf({ to })}`);
  if (state.mail.key !== to) await loadMail(ctx, to, PAGE);
  if (!state) return;
  showMailDetail(ctx, ctx.segments[2] ?? null);
}

async function loadMail(ctx, to, limit) {
  const form = ctx.root.querySelector('#mail-filter');
  const seq = ++state.mail.seq;
  clearFormErrors(form);
  ctx.root.querySelector('#mail-info').textContent = 'Loading…';
  try {
    const res = await call(ctx, 'mail/List', to ? { to, limit } : { limit });
    if (!state || seq !== state.mail.seq) return;
    Object.assign(state.mail, { key: to, mails: res.mails, transport: res.transport, limit });
    renderMailList(ctx);
  } catch (e) {
    if (state && seq === state.mail.seq) ctx.root.querySelector('#mail-info').textContent = '';
    failed(ctx, e, (err) => showFormError(form, err));
  }
}

function mailURL(ctx, id) {
  return `/admin/mail/${encodeURIComponent(id)}${queryOf({ to: state.mail.key })}`;
}

function renderMailList(ctx) {
  const { mails, transport, limit, key } = state.mail;
  const info = ctx.root.querySelector('#mail-info');
  if (transport === 'smtp') {
    info.textContent = 'Mails go out through the configured SMTP server, so the development mailbox keeps none: it is empty.';
  } else if (!mails.length) {
    info.textContent = key
      ? `No mails to ${key}.`
      : 'No mails yet. Sign-up confirmations, password resets, invitations and digests appear here once sent.';
  } else {
    info.textContent = `${mails.length === 1 ? 'One mail' : `${mails.length} mails`}${key ? ` to ${key}` : ''}, newest first.`;
  }
  const open = ctx.segments[2] ?? null;
  ctx.root.querySelector('#mail-list').replaceChildren(...mails.map((m) => h('li', {},
    h('a', { href: mailURL(ctx, m.id), dataset: { mailId: m.id }, 'aria-current': m.id === open ? 'true' : null },
      h('span', { class: 'admin-item-title' }, m.subject || '(no subject)'),
      h('span', { class: 'admin-item-meta' }, `To ${m.to.join(', ')}`),
      h('span', { class: 'admin-item-meta' }, time(m.created_at))))));
  ctx.root.querySelector('#mail-more').hidden = mails.length < limit || limit >= MAX_MAILS;
}

function showMailDetail(ctx, id) {
  const $ = (s) => ctx.root.querySelector(s);
  const detail = $('#mail-detail');
  for (const a of ctx.root.querySelectorAll('#mail-list a')) {
    if (a.dataset.mailId === id) a.setAttribute('aria-current', 'true'); else a.removeAttribute('aria-current');
  }
  $('#mail-split').classList.toggle('has-detail', !!id);
  if (!id) { detail.hidden = true; $('#mail-html').replaceChildren(); state.mail.shown = null; return; }
  if (state.mail.shown === id && !detail.hidden) return;
  state.mail.shown = id;
  detail.hidden = false;
  const mail = state.mail.mails.find((m) => m.id === id);
  if (!mail) {
    $('#mail-subject').textContent = 'Mail not found';
    $('#mail-meta').replaceChildren(h('dt', {}, 'Why'),
      h('dd', {}, `It is not among the ${state.mail.mails.length} latest mails${state.mail.key ? ` to ${state.mail.key}` : ''}.`));
    $('#mail-body').hidden = true;
  } else {
    $('#mail-body').hidden = false;
    $('#mail-subject').textContent = mail.subject || '(no subject)';
    $('#mail-meta').replaceChildren(...details([
      ['From', mail.from], ['To', mail.to.join(', ')], ['Sent', time(mail.created_at)],
    ]));
    const links = mailLinks(mail);
    $('#mail-links').replaceChildren(...(links.length
      ? links.map(([url, label]) => h('li', {}, label ? h('span', { class: 'mail-link-label' }, `${label}: `) : null,
        h('a', { href: url, target: '_blank', rel: 'noopener noreferrer' }, url)))
      : [h('li', { class: 'hint' }, 'None.')]));
    $('#mail-text').textContent = mail.text;
    $('#mail-html').replaceChildren(mail.html
      ? h('iframe', {
        class: 'mail-frame',
        title: `HTML part of the mail “${mail.subject}”`,
        // No allow-scripts, no allow-same-origin: the mail runs nothing and reaches nothing of
        // the app. Popups (its links, in a new tab) may leave the sandbox so they work as pages.
        sandbox: 'allow-popups allow-popups-to-escape-sandbox',
        referrerpolicy: 'no-referrer',
        srcdoc: framed(mail.html),
      })
      : h('p', { class: 'hint' }, 'This mail has no HTML part.'));
  }
  $('#mail-subject').focus({ preventScroll: false });
}

/**
 * The mail's HTML for the frame, as it is, but for a `<base target="_blank">` so its links open in
 * a new tab (the sandbox allows popups, not navigating the app). It is not parsed here: any parse
 * in the app's document (DOMParser, template) applies the app's Content-Security-Policy to the
 * mail's inline styles and logs a violation for each. The frame inherits that policy too, so
 * inline styles, scripts and other sites' images stay off in there.
 */
function framed(html) {
  return html.replace(/^(\s*<!doctype[^>]*>)?/i, '$1<base target="_blank">');
}

/** An absolute http(s) URL, normalised; null for anything else (javascript:, relative, ...). */
function safeURL(href) {
  try {
    const url = new URL(href);
    return url.protocol === 'http:' || url.protocol === 'https:' ? url.href : null;
  } catch { return null; }
}

const ENTITIES = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: '\u00a0' };
/** HTML character references in an attribute or text, as text (never through the DOM). */
function decode(s) {
  return s.replace(/&(#x[0-9a-f]+|#\d+|[a-z]+);/gi, (m, ref) => {
    if (ref[0] !== '#') return ENTITIES[ref.toLowerCase()] ?? m;
    const code = ref[1] === 'x' || ref[1] === 'X' ? parseInt(ref.slice(2), 16) : parseInt(ref.slice(1), 10);
    try { return String.fromCodePoint(code); } catch { return m; }
  });
}

/**
 * The mail's links, [url, label] once each: the HTML part's anchors (read as text: an anchor's
 * words become its label), then URLs in the text part. Only http(s) links are offered.
 */
function mailLinks(mail) {
  const links = new Map();
  const add = (href, label) => {
    const url = safeURL(href);
    if (url && !links.has(url)) links.set(url, label);
  };
  const anchors = /<a\b[^>]*?\shref\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))[^>]*>([\s\S]*?)<\/a\s*>/gi;
  for (const m of (mail.html ?? '').matchAll(anchors)) {
    const label = decode(m[4].replace(/<[^>]*>/g, '')).replace(/\s+/g, ' ').trim();
    add(decode((m[1] ?? m[2] ?? m[3]).trim()), label);
  }
  for (const [m] of mail.text.matchAll(/https?:\/\/[^\s<>"']+/g)) add(m.replace(/[.,;:!?)\]]+$/, ''), '');
  return [...links];
}

// ---- workflow runs ------------------------------------------------------------------------------
function runFilters(ctx) {
  return { status: ctx.query.get('status') ?? '', function_id: ctx.query.get('function_id') ?? '' };
}

async function showRuns(ctx) {
  const filters = runFilters(ctx);
  const form = ctx.root.querySelector('#runs-filter');
  form.elements.status.value = filters.status;
  form.elements.function_id.value = filters.function_id;
  ctx.root.querySelector('#run-back').setAttribute('href', `/admin/runs${queryOf(filters)}`);
  const key = JSON.stringify(filters);
  if (state.runs.key !== key) await loadRuns(ctx, filters, false);
  if (!state) return;
  const id = ctx.segments[2] ?? null;
  for (const a of ctx.root.querySelectorAll('#runs-list a')) {
    if (a.dataset.runId === id) a.setAttribute('aria-current', 'true'); else a.removeAttribute('aria-current');
  }
  ctx.root.querySelector('#runs-split').classList.toggle('has-detail', !!id);
  if (!id) {
    ctx.root.querySelector('#run-detail').hidden = true;
    Object.assign(state.runs, { shown: null, current: null });
    return;
  }
  if (state.runs.shown !== id) {
    state.runs.shown = id;
    ctx.root.querySelector('#run-error').textContent = '';
    await loadRun(ctx, id, { focus: true });
  }
}

async function loadRuns(ctx, filters, older) {
  const form = ctx.root.querySelector('#runs-filter');
  const info = ctx.root.querySelector('#runs-info');
  const seq = ++state.runs.seq;
  clearFormErrors(form);
  info.textContent = 'Loading…';
  const body = { limit: PAGE };
  if (filters.status) body.status = filters.status;
  if (filters.function_id) body.function_id = filters.function_id;
  if (older && state.runs.list.length) {
    const last = state.runs.list.at(-1);
    body.created_before = last.created_at;
    body.before_id = last.id;
  }
  try {
    const { runs } = await call(ctx, 'workflows/ListRuns', body);
    if (!state || seq !== state.runs.seq) return;
    const list = older ? state.runs.list.concat(runs.filter((r) => !state.runs.list.some((o) => o.id === r.id))) : runs;
    Object.assign(state.runs, { key: JSON.stringify(filters), list, more: runs.length === PAGE });
    renderRuns(ctx);
  } catch (e) {
    if (state && seq === state.runs.seq) info.textContent = '';
    failed(ctx, e, (err) => {
      // "status: must be one of ..." names the field; a bad function name does not exist, it just finds nothing.
      showFormError(form, err);
    });
  }
}

function runURL(ctx, id) {
  return `/admin/runs/${encodeURIComponent(id)}${queryOf(runFilters(ctx))}`;
}

function statusBadge(status) {
  return h('span', { class: `run-status run-status-${status}` }, status);
}

function renderRuns(ctx) {
  const { list, more } = state.runs;
  const filters = runFilters(ctx);
  const which = [filters.status, filters.function_id && `of ${filters.function_id}`].filter(Boolean).join(' ');
  ctx.root.querySelector('#runs-info').textContent = list.length
    ? `${list.length === 1 ? 'One run' : `${list.length} runs`}${which ? ` (${which})` : ''}, newest first.`
    : `No ${which ? `${which} ` : ''}runs.`;
  const open = ctx.segments[2] ?? null;
  ctx.root.querySelector('#runs-list').replaceChildren(...list.map((r) => h('li', {},
    h('a', { href: runURL(ctx, r.id), dataset: { runId: r.id }, 'aria-current': r.id === open ? 'true' : null },
      h('span', { class: 'admin-item-title' }, r.function_id, ' ', statusBadge(r.status)),
      h('span', { class: 'admin-item-meta' },
        `${r.attempts === 1 ? '1 attempt' : `${r.attempts} attempts`} · created `, time(r.created_at),
        r.finished_at ? [' · finished ', time(r.finished_at)] : null),
      r.error ? h('span', { class: 'admin-item-error' }, r.error) : null))));
  ctx.root.querySelector('#runs-more').hidden = !more;
}

async function loadRun(ctx, id, { focus = false } = {}) {
  const $ = (s) => ctx.root.querySelector(s);
  const seq = ++state.runs.detailSeq;
  $('#run-detail').hidden = false;
  try {
    const res = await call(ctx, 'workflows/ReadRun', { id });
    if (!state || seq !== state.runs.detailSeq) return;
    state.runs.current = res.run;
    renderRun(ctx, res);
    // The list shows the run as it is now too.
    const i = state.runs.list.findIndex((r) => r.id === res.run.id);
    if (i >= 0) { state.runs.list[i] = res.run; renderRuns(ctx); }
  } catch (e) {
    if (!state || seq !== state.runs.detailSeq) return;
    failed(ctx, e, (err) => {
      state.runs.current = null;
      $('#run-title').textContent = err.code === 404 ? 'Run not found' : 'Could not read the run';
      $('#run-body').hidden = true;
      $('#run-retry').hidden = true;
      $('#run-cancel').hidden = true;
      $('#run-error').textContent = capital(err.detail);
    });
  }
  if (focus && state && seq === state.runs.detailSeq) $('#run-title').focus({ preventScroll: false });
}

function json(value) {
  return value === null || value === undefined ? '' : JSON.stringify(value, null, 2);
}

function renderRun(ctx, { run, steps, attempts }) {
  const $ = (s) => ctx.root.querySelector(s);
  $('#run-body').hidden = false;
  $('#run-title').replaceChildren(`${run.function_id} `, statusBadge(run.status));
  $('#run-retry').hidden = !RETRYABLE.includes(run.status);
  $('#run-cancel').hidden = !ACTIVE.includes(run.status);
  $('#run-meta').replaceChildren(...details([
    ['Status', run.status],
    ['Attempts', String(run.attempts)],
    ['Error', run.error ? h('span', { class: 'admin-error-text' }, run.error) : null],
    ['Event', `${run.event_type} (#${run.event_seq})`],
    ['Created', time(run.created_at)],
    ['Due', time(run.run_at)],
    ['Started', run.started_at ? time(run.started_at) : null],
    ['Finished', run.finished_at ? time(run.finished_at) : null],
    ['Idempotency key', run.idempotency_key],
    ['Concurrency key', run.concurrency_key],
    ['Run id', run.id],
  ]));
  $('#run-steps').replaceChildren(...(steps.length ? steps.map((s) => h('li', {},
    h('div', { class: 'admin-item-title' }, s.name, ' ', statusBadge(s.status)),
    h('dl', { class: 'meta-list' }, ...details([
      ['Failures', s.failures ? String(s.failures) : null],
      ['Error', s.error ? h('span', { class: 'admin-error-text' }, s.error) : null],
      ['Started', time(s.started_at)],
      ['Finished', s.finished_at ? time(s.finished_at) : null],
      ['Wakes', s.wake_at ? time(s.wake_at) : null],
      ['Output', s.output !== null && s.output !== undefined ? h('pre', { class: 'admin-pre' }, json(s.output)) : null],
    ])))) : [h('li', { class: 'hint' }, 'No steps yet.')]));
  $('#run-attempts').replaceChildren(...(attempts.length ? attempts.map((a) => h('li', {},
    h('div', { class: 'admin-item-title' }, `Attempt ${a.number}`, a.outcome ? [' ', statusBadge(a.outcome)] : null),
    h('dl', { class: 'meta-list' }, ...details([
      ['Worker', a.worker],
      ['Step', a.step],
      ['Error', a.error ? h('span', { class: 'admin-error-text' }, a.error) : null],
      ['Started', time(a.started_at)],
      ['Finished', a.finished_at ? time(a.finished_at) : null],
    ])))) : [h('li', { class: 'hint' }, 'No attempts yet.')]));
  $('#run-event').textContent = json(run.event);
}

/** RetryRun / CancelRun on the open run; the server's refusal (e.g. it finished meanwhile) is shown. */
async function act(ctx, method, done) {
  const $ = (s) => ctx.root.querySelector(s);
  const run = state.runs.current;
  if (!run) return;
  const buttons = [$('#run-retry'), $('#run-cancel')];
  for (const b of buttons) b.disabled = true;
  $('#run-error').textContent = '';
  try {
    await call(ctx, `workflows/${method}`, { id: run.id });
    ctx.announce(done);
  } catch (e) {
    failed(ctx, e, (err) => { $('#run-error').textContent = capital(err.detail); });
  } finally {
    for (const b of buttons) b.disabled = false;
  }
  // Either way, show the run as it is now.
  if (state && state.runs.current?.id === run.id) await loadRun(ctx, run.id);
}

// ---- lifecycle ----------------------------------------------------------------------------------
window.verteilt.register('admin', {
  async beforeMount(ctx) {
    state = fresh();
    const $ = (s) => ctx.root.querySelector(s);
    on($('#mail-filter'), 'submit', (e) => {
      e.preventDefault();
      const to = $('#mail-to').value.trim();
      state.mail.key = null; // filtering again reloads
      ctx.navigate(`/admin/mail${queryOf({ to })}`);
    });
    on($('#mail-refresh'), 'click', async () => {
      await loadMail(ctx, ctx.query.get('to') ?? '', state.mail.limit);
      if (!state) return;
      state.mail.shown = null;
      showMailDetail(ctx, ctx.segments[2] ?? null);
    });
    on($('#mail-more'), 'click', () => loadMail(ctx, state.mail.key ?? '', Math.min(state.mail.limit + PAGE, MAX_MAILS)));
    on($('#runs-filter'), 'submit', (e) => {
      e.preventDefault();
      const f = $('#runs-filter').elements;
      state.runs.key = null;
      ctx.navigate(`/admin/runs${queryOf({ status: f.status.value, function_id: f.function_id.value.trim() })}`);
    });
    on($('#runs-refresh'), 'click', async () => {
      await loadRuns(ctx, runFilters(ctx), false);
      if (state?.runs.current) await loadRun(ctx, state.runs.current.id);
    });
    on($('#runs-more'), 'click', () => loadRuns(ctx, runFilters(ctx), true));
    on($('#run-retry'), 'click', () => act(ctx, 'RetryRun', 'Run queued again'));
    on($('#run-cancel'), 'click', () => act(ctx, 'CancelRun', 'Run cancelled'));
    await show(ctx);
  },
  update: show,
  unmount() {
    state.controller.abort();
    for (const fn of state.off) fn();
    state = null;
  },
});
