// The orchestrator: reads /config.json and the session, picks a micro-frontend from the URL's
// first path segment, loads it (fetch its HTML, parse it, append its nodes), runs its lifecycle,
// and on unload removes what it appended and the globals it added. Micro-frontends talk to the
// app only through the context handed to their hooks.
import { ApiError, createApiClient } from './shared/api.js';
import { Realtime } from './shared/realtime.js';

const base = new URL('./', import.meta.url);
/** First path segment → micro-frontend folder. */
const SECTIONS = { account: 'account', groups: 'chat', chats: 'chat', settings: 'settings', invite: 'invite', admin: 'admin' };
/** Sections a signed-out visitor may see. */
const PUBLIC = new Set(['account', 'invite']);

const app = document.getElementById('app');
const registry = new Map();   // micro-frontend name → its hooks (a module runs once per page)
const registered = new Map(); // name → resolve() of someone waiting for it
let config = {};
let user = null;
let admin = false;            // whether `user` has the admin role (only shows the Admin link: the server decides)
let current = null;           // { name, hooks, ctx, nodes, globals, cleanups }
let generation = 0;

// ---- event bus --------------------------------------------------------------------------------
const listeners = new Map();
const bus = {
  on(type, fn) {
    if (!listeners.has(type)) listeners.set(type, new Set());
    listeners.get(type).add(fn);
    return () => listeners.get(type)?.delete(fn);
  },
  emit(type, ...args) {
    for (const fn of [...(listeners.get(type) ?? [])]) {
      try { fn(...args); } catch (e) { console.error(`listener of ${type} failed`, e); }
    }
  },
};

// ---- API client and the shared realtime connection --------------------------------------------
const api = createApiClient({
  onUnauthorized: (_err, url) => {
    if (user && !String(url).includes('users/Login')) bus.emit('session:ended', {});
  },
});
const realtime = new Realtime({ call: api.call, emit: bus.emit, maxBackoffMs: 8000 });

bus.on('session:ended', () => {
  if (!user) return;
  setSession(null);
  navigate(`/account/login?next=${encodeURIComponent(location.pathname + location.search)}`, { replace: true });
});

bus.on('realtime:status', ({ status }) => {
  const el = document.getElementById('connection');
  el.dataset.status = status;
  el.textContent = status === 'reconnecting' ? 'Reconnecting…' : status === 'connecting' ? 'Connecting…' : '';
});

/** `isAdmin` from `/api/session`; left out (a sign-in answer has no role), a new user's role is asked for. */
function setSession(next, { isAdmin } = {}) {
  const previous = user;
  user = next;
  document.getElementById('main-nav').hidden = !user;
  if (!user) {
    admin = false;
    realtime.stop();
    if (previous) clearStorage(previous.id);
  } else if (isAdmin !== undefined) {
    admin = isAdmin === true;
  } else if (user.id !== previous?.id) {
    admin = false;
    refreshSession().catch(() => {});
  }
  document.getElementById('admin-link').hidden = !admin;
  bus.emit('session:changed', { user });
}

/** Asks the server who is signed in and with which role (after a sign-in, or a role granted since). */
async function refreshSession() {
  const asked = user?.id;
  const session = await api.page('/api/session');
  if (user && user.id === asked) setSession(session.user, { isAdmin: session.is_admin === true });
  return session;
}

// ---- storage, namespaced per user and micro-frontend -------------------------------------------
function storageFor(name) {
  const prefix = () => `verteilt:${user?.id ?? 'anonymous'}:${name}:`;
  return {
    get(key, fallback = null) {
      try {
        const v = localStorage.getItem(prefix() + key);
        return v === null ? fallback : JSON.parse(v);
      } catch { return fallback; }
    },
    set(key, value) {
      try { localStorage.setItem(prefix() + key, JSON.stringify(value)); } catch { /* full or disabled */ }
    },
    remove(key) { localStorage.removeItem(prefix() + key); },
  };
}

function clearStorage(userId) {
  const prefix = `verteilt:${userId}:`;
  for (let i = localStorage.length - 1; i >= 0; i--) {
    const k = localStorage.key(i);
    if (k && k.startsWith(prefix)) localStorage.removeItem(k);
  }
}

// ---- navigation and routing -------------------------------------------------------------------
/** `next` from a query string, if it is a path of this app (never another site: `//x`, `/\\x`). */
function sameOriginPath(next) {
  if (!next) return null;
  try {
    const url = new URL(next, location.origin);
    return url.origin === location.origin ? url.pathname + url.search + url.hash : null;
  } catch { return null; }
}

function navigate(path, { replace = false } = {}) {
  const url = new URL(sameOriginPath(path) ?? '/', location.origin);
  if (url.href !== location.href) history[replace ? 'replaceState' : 'pushState']({}, '', url);
  return route();
}

function decide(url) {
  const segments = url.pathname.split('/').filter(Boolean).map((s) => { try { return decodeURIComponent(s); } catch { return s; } });
  const first = segments[0] ?? '';
  if (!user && !PUBLIC.has(first)) {
    const next = first ? `?next=${encodeURIComponent(url.pathname + url.search)}` : '';
    return { redirect: `/account/login${next}` };
  }
  // Signed in, the account pages lead on, except those a mailed link opens on any device.
  if (user && (first === '' || (first === 'account' && !['logout', 'verify', 'reset'].includes(segments[1])))) {
    return { redirect: sameOriginPath(url.searchParams.get('next')) ?? '/groups' };
  }
  return { name: SECTIONS[first], segments };
}

let routing = Promise.resolve();
function route() {
  const mine = ++generation;
  routing = routing.then(() => (mine === generation ? run() : undefined)).catch((e) => showFailure(e));
  return routing;
}

async function run() {
  const url = new URL(location.href);
  const decision = decide(url);
  if (decision.redirect) {
    history.replaceState({}, '', decision.redirect);
    return run();
  }
  const { name, segments } = decision;
  markNav(segments[0]);
  if (current && current.name === name) {
    updateContext(current.ctx, url, segments);
    await current.hooks.update?.(current.ctx);
    return;
  }
  await unload();
  if (!name) { showNotFound(); return; }
  const nodes = [];
  try {
    await load(name, url, segments, nodes);
  } catch (e) {
    // A micro-frontend that failed to load leaves nothing behind either.
    if (current?.nodes === nodes) await unload(); else for (const n of nodes) n.remove();
    throw e;
  }
}

function markNav(first) {
  for (const a of document.querySelectorAll('#main-nav a')) {
    const target = new URL(a.href).pathname.split('/')[1];
    const here = SECTIONS[target] && SECTIONS[target] === SECTIONS[first];
    if (here) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
}

function updateContext(ctx, url, segments) {
  ctx.path = url.pathname;
  ctx.segments = segments;
  ctx.query = url.searchParams;
}

// ---- loading and unloading micro-frontends ----------------------------------------------------
async function load(name, url, segments, nodes) {
  app.setAttribute('aria-busy', 'true');
  const source = new URL(`${name}/index.html`, base);
  const html = await fetchHTML(name);
  const doc = new DOMParser().parseFromString(html, 'text/html');
  const globals = new Set(Object.getOwnPropertyNames(window));
  const absolute = (v) => new URL(v, source).href;

  // Styles first and waited for, so the markup never shows unstyled.
  const styleLoads = [];
  for (const link of doc.querySelectorAll('link[rel="stylesheet"]')) {
    const el = document.createElement('link');
    el.rel = 'stylesheet';
    el.href = absolute(link.getAttribute('href'));
    el.dataset.mf = name;
    styleLoads.push(new Promise((resolve) => { el.onload = el.onerror = resolve; }));
    document.head.append(el);
    nodes.push(el);
    link.remove();
  }
  // Module preloads start the micro-frontend's imports alongside its script, not after it.
  for (const link of doc.querySelectorAll('link[rel="modulepreload"]')) {
    const el = document.createElement('link');
    el.rel = 'modulepreload';
    el.href = absolute(link.getAttribute('href'));
    el.dataset.mf = name;
    document.head.append(el);
    nodes.push(el);
    link.remove();
  }
  const scripts = [...doc.querySelectorAll('script')];
  for (const s of scripts) s.remove();

  const container = document.createElement('div');
  container.className = `mf mf-${name}`;
  container.dataset.mf = name;
  for (const child of [...doc.body.childNodes]) container.append(document.adoptNode(child));

  // Parsed scripts do not run: each is re-created so the browser fetches and runs it.
  const ready = new Promise((resolve) => {
    if (registry.has(name)) resolve();
    else registered.set(name, resolve);
  });
  for (const s of scripts) {
    const el = document.createElement('script');
    for (const { name: attr, value } of s.attributes) el.setAttribute(attr, attr === 'src' ? absolute(value) : value);
    el.dataset.mf = name;
    document.body.append(el);
    nodes.push(el);
  }
  await Promise.all([...styleLoads, withTimeout(ready, 10000, `${name} did not register`)]);

  const hooks = registry.get(name);
  const cleanups = [];
  const ctx = makeContext(name, container, cleanups);
  updateContext(ctx, url, segments);
  current = { name, hooks, ctx, nodes, globals, cleanups };
  await hooks.beforeMount?.(ctx);
  app.replaceChildren(container);
  nodes.push(container);
  await hooks.mount?.(ctx);
  app.setAttribute('aria-busy', 'false');
  // Focus moves into the new content (for keyboard and screen reader users), unless the
  // micro-frontend already put it somewhere.
  if (!container.contains(document.activeElement)) focusMain(container);
}

/** A micro-frontend's HTML, fetched once per page (the start fetches the likely one early). */
const htmlFetches = new Map();
function fetchHTML(name) {
  if (!htmlFetches.has(name)) {
    const request = fetch(new URL(`${name}/index.html`, base)).then((res) => {
      if (!res.ok) throw new Error(`could not load ${name} (${res.status})`);
      return res.text();
    });
    request.catch(() => htmlFetches.delete(name));
    htmlFetches.set(name, request);
  }
  return htmlFetches.get(name);
}

async function unload() {
  const mf = current;
  if (!mf) { app.replaceChildren(); return; }
  current = null;
  try { await mf.hooks.unmount?.(mf.ctx); } catch (e) { console.error(`${mf.name} unmount failed`, e); }
  for (const fn of mf.cleanups.splice(0)) { try { fn(); } catch (e) { console.error(e); } }
  for (const n of mf.nodes) n.remove();
  try { await mf.hooks.afterUnmount?.(mf.ctx); } catch (e) { console.error(`${mf.name} afterUnmount failed`, e); }
  for (const key of Object.getOwnPropertyNames(window)) {
    if (mf.globals.has(key)) continue;
    try { delete window[key]; } catch { /* non-configurable */ }
    if (Object.prototype.hasOwnProperty.call(window, key)) window[key] = undefined;
  }
}

function makeContext(name, root, cleanups) {
  const track = (off) => { cleanups.push(off); return off; };
  return {
    name,
    root,
    config,
    get user() { return user; },
    /** Whether the user has the admin role, as the session said; `refreshSession()` asks again. */
    get isAdmin() { return admin; },
    refreshSession,
    api: { call: api.call, page: api.page, ApiError },
    bus: { on: (t, fn) => track(bus.on(t, fn)), emit: bus.emit },
    storage: storageFor(name),
    navigate,
    setSession,
    realtime: {
      start: (since) => realtime.start(since),
      ready: () => realtime.ready(),
      send: (frame) => realtime.send(frame),
      get cursor() { return realtime.cursor; },
      get status() { return realtime.status; },
      on: (event, fn) => track(bus.on(`realtime:${event}`, fn)),
    },
    /** Runs when the micro-frontend is unloaded (timers, listeners on window, ...). */
    onCleanup: (fn) => { cleanups.push(fn); },
    announce,
    setTitle(title) { document.title = title ? `${title} · ${config.labels?.app_name ?? 'Verteilt'}` : (config.labels?.app_name ?? 'Verteilt'); },
  };
}

function withTimeout(promise, ms, message) {
  let timer;
  return Promise.race([promise, new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(message)), ms); })])
    .finally(() => clearTimeout(timer));
}

function focusMain(container) {
  const target = container.querySelector('[autofocus]') ?? container.querySelector('h1');
  if (target) {
    if (!target.hasAttribute('tabindex') && target.tagName === 'H1') target.setAttribute('tabindex', '-1');
    target.focus({ preventScroll: true });
  }
}

function announce(text) {
  const el = document.getElementById('announcer');
  el.textContent = '';
  setTimeout(() => { el.textContent = text; }, 50);
}

function showNotFound() {
  const h = document.createElement('h1');
  h.textContent = 'Page not found';
  const p = document.createElement('p');
  const a = document.createElement('a');
  a.href = '/';
  a.textContent = 'Go to the start page';
  p.append(a);
  app.replaceChildren(h, p);
  app.setAttribute('aria-busy', 'false');
}

function showFailure(e) {
  console.error(e);
  const h = document.createElement('h1');
  h.textContent = 'Something went wrong';
  const p = document.createElement('p');
  p.textContent = e instanceof ApiError ? e.detail : String(e.message ?? e);
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = 'Try again';
  b.onclick = () => location.reload();
  app.replaceChildren(h, p, b);
  app.setAttribute('aria-busy', 'false');
}

// Same-origin links into the app are routed here instead of reloading the page.
document.addEventListener('click', (e) => {
  if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  const a = e.target.closest?.('a[href]');
  if (!a || a.target || a.hasAttribute('download')) return;
  const url = new URL(a.href);
  if (url.origin !== location.origin) return;
  const first = url.pathname.split('/').filter(Boolean)[0] ?? '';
  if (first !== '' && !(first in SECTIONS)) return;
  e.preventDefault();
  navigate(url.pathname + url.search + url.hash);
});
window.addEventListener('popstate', () => route());
window.addEventListener('online', () => realtime.nudge());

/** The one global the app adds: how micro-frontends register their lifecycle hooks. */
Object.defineProperty(window, 'verteilt', {
  value: Object.freeze({
    register(name, hooks) {
      registry.set(name, hooks);
      registered.get(name)?.();
      registered.delete(name);
    },
    /** For diagnostics and tests: what is loaded, and the realtime state. */
    get state() {
      return { microFrontend: current?.name ?? null, user: user?.id ?? null, realtime: realtime.status, cursor: realtime.cursor };
    },
  }),
  enumerable: false,
});

// ---- start ------------------------------------------------------------------------------------
async function start() {
  // While config and session load, fetch the micro-frontend the URL most likely wants.
  const likely = SECTIONS[location.pathname.split('/')[1] ?? ''];
  if (likely) fetchHTML(likely).catch(() => {});
  const [cfg, session] = await Promise.all([
    fetch('/config.json').then((r) => (r.ok ? r.json() : {})).catch(() => ({})),
    api.page('/api/session').catch(() => null),
  ]);
  config = Object.freeze(cfg);
  if (config.labels?.app_name) document.getElementById('brand').textContent = config.labels.app_name;
  setSession(session?.user ?? null, { isAdmin: session?.is_admin === true });
  await route();
}

start();
