// chat's state for one mount and the data it loads: groups, the group page, users, read marks.
import { renderBadges } from './lists.js';

export const EMOJI = ['👍', '❤️', '😂', '🎉'];
export let S = null; // this mount's state; a new one per mount

function newState(ctx) {
  return {
    ctx,
    $: (sel) => ctx.root.querySelector(sel),
    groups: [],
    convGroup: new Map(),       // conversation id → group id
    conversations: new Map(),   // group id → [Conversation]
    unread: { threads: {}, chats: {} },
    page: null,                 // the open group's page (/api/groups/{id})
    users: new Map(),
    presence: new Map(),
    chats: [],
    stores: new Map(),          // 't:<id>' / 'c:<id>' → { messages: Map, hasOlder, loading }
    open: null,                 // { kind: 'thread'|'chat', id, groupId?, key }
    typing: new Map(),          // user id → timer, for the open place
    compose: null,              // { mode: 'reply'|'edit', message }
    lastTyping: 0,
    typingTimer: null,
    unreadTimer: null,
    seenTimer: null,
    seenPending: null,
    renderedDay: null,
    listeners: [],
    retries: new Map(),
  };
}

export const call = (m, b) => S.ctx.api.call(m, b);
export const me = () => S.ctx.user.id;
export const keyOf = (m) => (m.conversation_id ? `t:${m.conversation_id}` : `c:${m.chat_id}`);

export function store(key) {
  if (!S.stores.has(key)) S.stores.set(key, { messages: new Map(), hasOlder: true, loading: false });
  return S.stores.get(key);
}

export function sorted(st) {
  return [...st.messages.values()].sort((a, b) => {
    if (!a.sent_at !== !b.sent_at) return a.sent_at ? -1 : 1; // pending ones last
    return (a.sent_at ?? '').localeCompare(b.sent_at ?? '') || a.id.localeCompare(b.id);
  });
}

export function remember(users) {
  for (const u of users) if (u && u.id) S.users.set(u.id, { ...S.users.get(u.id), ...u });
}

export async function ensureUsers(ids) {
  const missing = [...new Set(ids)].filter((id) => id && !S.users.has(id));
  if (!missing.length) return;
  try {
    const { users } = await call('users/Read', { ids: missing });
    remember(Object.values(users ?? {}));
  } catch { /* names fall back to "Someone" */ }
}

export async function loadGroups() {
  const [{ groups }, unread, { chats }] = await Promise.all([
    call('groups/List', {}), call('seen/Unread', {}), call('chats/List', {}),
  ]);
  S.groups = groups ?? [];
  S.unread = { threads: unread.threads ?? {}, chats: unread.chats ?? {} };
  if (S.open) S.unread[S.open.kind === 'thread' ? 'threads' : 'chats'][S.open.id] = 0;
  S.chats = chats ?? [];
  const lists = await Promise.all(S.groups.map((g) =>
    call('threads/ListConversations', { group_id: g.id }).then((r) => r.conversations ?? []).catch(() => [])));
  S.groups.forEach((g, i) => {
    S.conversations.set(g.id, lists[i]);
    for (const c of lists[i]) S.convGroup.set(c.id, g.id);
  });
  await ensureUsers(S.chats.flatMap((c) => c.user_ids));
}

export async function loadPage(groupId) {
  const page = await S.ctx.api.page(`/api/groups/${encodeURIComponent(groupId)}`);
  S.page = page;
  remember(page.members);
  const convs = page.threads.map((t) => ({ id: t.id, group_id: page.id, topic: t.topic }));
  S.conversations.set(page.id, convs);
  for (const t of page.threads) {
    S.convGroup.set(t.id, page.id);
    S.unread.threads[t.id] = t.unread ?? 0;
    const st = store(`t:${t.id}`);
    for (const m of t.messages) st.messages.set(m.id, m);
    st.loadedOnce = true;
    if (t.messages.length < (S.ctx.config.limits?.page_size ?? 25)) st.hasOlder = false;
  }
  for (const m of page.members) {
    if (!m.chat) continue;
    S.unread.chats[m.chat.id] = m.chat.unread ?? 0;
    const st = store(`c:${m.chat.id}`);
    for (const msg of m.chat.messages ?? []) st.messages.set(msg.id, msg);
    st.loadedOnce = true;
    if ((m.chat.messages ?? []).length < (S.ctx.config.limits?.page_size ?? 25)) st.hasOlder = false;
  }
  return page;
}

/** Recounts unread badges from the server a moment after live events changed them. */
export function refreshUnreadSoon() {
  clearTimeout(S.unreadTimer);
  S.unreadTimer = setTimeout(async () => {
    if (!S) return;
    try {
      const u = await call('seen/Unread', {});
      if (!S) return;
      S.unread = { threads: u.threads ?? {}, chats: u.chats ?? {} };
      if (S.open) S.unread[S.open.kind === 'thread' ? 'threads' : 'chats'][S.open.id] = 0;
      renderBadges();
    } catch { /* the next event tries again */ }
  }, 800);
}

/** The open place is read up to its newest message: at once, then at most every 300 ms. */
export function markSeenSoon() {
  if (!S.open || document.visibilityState === 'hidden') return;
  const open = S.open;
  const newest = sorted(store(open.key)).filter((m) => m.sent_at).pop();
  S.unread[open.kind === 'thread' ? 'threads' : 'chats'][open.id] = 0;
  renderBadges();
  if (!newest) return;
  S.seenPending = { resource_type: open.kind, resource_id: open.id, timestamp: newest.sent_at };
  if (S.seenTimer) return;
  flushSeen();
  S.seenTimer = setTimeout(() => { if (S) { S.seenTimer = null; flushSeen(); } }, 300);
}

/** Sends the pending read mark; `keepalive` lets it outlive a page that is being left. */
export function flushSeen(keepalive = false) {
  const mark = S?.seenPending;
  if (!mark) return;
  S.seenPending = null;
  S.ctx.api.call('seen/Set', mark, { keepalive }).catch(() => {});
}

/** A fresh state for a new mount; `end()` drops it. Other modules read `S` as a live binding. */
export function begin(ctx) { S = newState(ctx); return S; }
export function end() { S = null; }
