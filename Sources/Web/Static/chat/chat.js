// chat: groups, conversations, private chats, the message list and the composer.
// Routes: /groups, /groups/{group}, /groups/{group}/{conversation}, /chats, /chats/{chat}.
import { busy, clearFormErrors, displayName, h, showFormError } from '../shared/dom.js';

const EMOJI = ['👍', '❤️', '😂', '🎉'];
let S = null; // this mount's state; a new one per mount

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

// ---------------------------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------------------------
const call = (m, b) => S.ctx.api.call(m, b);
const me = () => S.ctx.user.id;
const keyOf = (m) => (m.conversation_id ? `t:${m.conversation_id}` : `c:${m.chat_id}`);

function store(key) {
  if (!S.stores.has(key)) S.stores.set(key, { messages: new Map(), hasOlder: true, loading: false });
  return S.stores.get(key);
}

function sorted(st) {
  return [...st.messages.values()].sort((a, b) => {
    if (!a.sent_at !== !b.sent_at) return a.sent_at ? -1 : 1; // pending ones last
    return (a.sent_at ?? '').localeCompare(b.sent_at ?? '') || a.id.localeCompare(b.id);
  });
}

function remember(users) {
  for (const u of users) if (u && u.id) S.users.set(u.id, { ...S.users.get(u.id), ...u });
}

async function ensureUsers(ids) {
  const missing = [...new Set(ids)].filter((id) => id && !S.users.has(id));
  if (!missing.length) return;
  try {
    const { users } = await call('users/Read', { ids: missing });
    remember(Object.values(users ?? {}));
  } catch { /* names fall back to "Someone" */ }
}

async function loadGroups() {
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

async function loadPage(groupId) {
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
function refreshUnreadSoon() {
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
function markSeenSoon() {
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
function flushSeen(keepalive = false) {
  const mark = S?.seenPending;
  if (!mark) return;
  S.seenPending = null;
  S.ctx.api.call('seen/Set', mark, { keepalive }).catch(() => {});
}

// ---------------------------------------------------------------------------------------------
// Routing inside the micro-frontend
// ---------------------------------------------------------------------------------------------
async function show(ctx) {
  const [section, first, second] = ctx.segments;
  const layout = S.$('.chat-layout');
  let view = 'groups';
  let open = null;
  if (section === 'groups' && first) {
    const page = S.page?.id === first ? S.page : await loadPage(first);
    view = second ? 'conversation' : 'group';
    if (second) {
      if (!page.threads.some((t) => t.id === second)) throw new ctx.api.ApiError({ code: 404, detail: 'conversation not found' });
      open = { kind: 'thread', id: second, groupId: first, key: `t:${second}` };
    }
  } else if (section === 'chats' && first) {
    if (!S.chats.some((c) => c.id === first)) {
      const { chats } = await call('chats/List', {});
      S.chats = chats ?? [];
      await ensureUsers(S.chats.flatMap((c) => c.user_ids));
    }
    if (!S.chats.some((c) => c.id === first)) throw new ctx.api.ApiError({ code: 404, detail: 'chat not found' });
    view = 'conversation';
    open = { kind: 'chat', id: first, key: `c:${first}` };
  } else if (section === 'groups') {
    S.page = null;
  }
  layout.dataset.view = view;
  layout.dataset.kind = open?.kind ?? '';
  layout.dataset.hasGroup = S.page ? 'true' : 'false';
  const changed = S.open?.key !== open?.key;
  S.open = open;
  renderGroups();
  renderGroup();
  if (changed) {
    setCompose(null);
    S.typing.forEach((t) => clearTimeout(t));
    S.typing.clear();
    renderTyping();
    if (open) await openConversation();
  }
  const title = open ? conversationTitle() : S.page ? S.page.name : 'Groups';
  ctx.setTitle(title);
}

function failed(ctx, err) {
  const layout = S.$('.chat-layout');
  layout.dataset.view = 'groups';
  S.page = null;
  S.open = null;
  renderGroups();
  ctx.announce(err.code === 404 ? 'Not found' : err.detail ?? String(err));
  const alert = S.$('#new-group-form [role="alert"]');
  alert.textContent = err.code === 404 ? 'That group or conversation does not exist, or you are not a member.' : (err.detail ?? String(err));
}

// ---------------------------------------------------------------------------------------------
// Rendering: lists
// ---------------------------------------------------------------------------------------------
function badge(n, label) {
  const b = h('span', { class: 'badge', dataset: { count: String(n) } }, String(n));
  b.setAttribute('aria-label', `${n} unread ${label}`);
  b.hidden = !n;
  return b;
}

function groupUnread(groupId) {
  return (S.conversations.get(groupId) ?? []).reduce((sum, c) => sum + (S.unread.threads[c.id] ?? 0), 0);
}

function renderGroups() {
  const list = S.$('#group-list');
  list.replaceChildren(...S.groups.map((g) => {
    const a = h('a', { href: `/groups/${g.id}`, dataset: { groupId: g.id } }, h('span', { class: 'name' }, g.name), badge(groupUnread(g.id), 'messages'));
    if (S.page?.id === g.id) a.setAttribute('aria-current', 'page');
    return h('li', {}, a);
  }));
  S.$('#no-groups').hidden = S.groups.length > 0;
  const chats = S.$('#chat-list');
  chats.replaceChildren(...S.chats.map((c) => {
    const a = h('a', { href: `/chats/${c.id}`, dataset: { chatId: c.id } }, h('span', { class: 'name' }, chatName(c)), badge(S.unread.chats[c.id] ?? 0, 'messages'));
    if (S.open?.kind === 'chat' && S.open.id === c.id) a.setAttribute('aria-current', 'page');
    return h('li', {}, a);
  }));
  S.$('#no-chats').hidden = S.chats.length > 0;
}

function chatName(chat) {
  const others = chat.user_ids.filter((id) => id !== me());
  return others.map((id) => displayName(S.users.get(id))).join(', ') || 'Just you';
}

function renderGroup() {
  const page = S.page;
  if (!page) return;
  S.$('#group-title').textContent = page.name;
  S.$('#group-description').textContent = page.description ?? '';
  const convs = S.$('#conversation-list');
  convs.replaceChildren(...page.threads.map((t) => {
    const a = h('a', { href: `/groups/${page.id}/${t.id}`, dataset: { conversationId: t.id } },
      h('span', { class: 'name' }, `# ${t.topic}`), badge(S.unread.threads[t.id] ?? 0, 'messages'));
    if (S.open?.id === t.id) a.setAttribute('aria-current', 'page');
    return h('li', {}, a);
  }));
  const members = S.$('#member-list');
  members.replaceChildren(...page.members.map((m) => {
    const online = S.presence.get(m.id) ?? false;
    const dot = h('span', { class: `presence ${online ? 'online' : ''}`, dataset: { userId: m.id } });
    dot.setAttribute('aria-label', online ? 'online' : 'offline');
    dot.setAttribute('role', 'img');
    const label = [displayName(m), m.current_user ? '(you)' : '', m.role !== 'member' ? `· ${m.role}` : ''].filter(Boolean).join(' ');
    if (m.current_user) return h('li', {}, dot, h('span', {}, label));
    const button = h('button', { type: 'button', class: 'link', onclick: () => openPrivateChat(m) }, label);
    button.setAttribute('aria-label', `Private chat with ${displayName(m)}`);
    return h('li', {}, dot, button, m.chat ? badge(S.unread.chats[m.chat.id] ?? 0, 'messages') : null);
  }));
  S.$('#invite-panel').hidden = !(page.role === 'owner' || page.role === 'admin');
  S.$('#conversation-back').setAttribute('href', `/groups/${page.id}`);
}

function renderBadges() {
  for (const a of S.ctx.root.querySelectorAll('a[data-group-id]')) setBadge(a, groupUnread(a.dataset.groupId));
  for (const a of S.ctx.root.querySelectorAll('a[data-conversation-id]')) setBadge(a, S.unread.threads[a.dataset.conversationId] ?? 0);
  for (const a of S.ctx.root.querySelectorAll('a[data-chat-id]')) setBadge(a, S.unread.chats[a.dataset.chatId] ?? 0);
}

function setBadge(a, n) {
  const b = a.querySelector('.badge');
  if (!b) return;
  b.textContent = String(n);
  b.dataset.count = String(n);
  b.setAttribute('aria-label', `${n} unread messages`);
  b.hidden = !n;
}

function conversationTitle() {
  if (!S.open) return '';
  if (S.open.kind === 'thread') return `# ${S.page?.threads.find((t) => t.id === S.open.id)?.topic ?? ''}`;
  const chat = S.chats.find((c) => c.id === S.open.id);
  return chat ? chatName(chat) : 'Private chat';
}

// ---------------------------------------------------------------------------------------------
// Rendering: messages
// ---------------------------------------------------------------------------------------------
const dayFormat = new Intl.DateTimeFormat(undefined, { weekday: 'long', day: 'numeric', month: 'long', year: 'numeric' });
const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });

function dayOf(m) {
  const d = m.sent_at ? new Date(m.sent_at) : new Date();
  return d.toDateString();
}

function dayLabel(m) {
  const d = m.sent_at ? new Date(m.sent_at) : new Date();
  const today = new Date();
  const yesterday = new Date(Date.now() - 86400000);
  if (d.toDateString() === today.toDateString()) return 'Today';
  if (d.toDateString() === yesterday.toDateString()) return 'Yesterday';
  return dayFormat.format(d);
}

function messageNode(m) {
  const mine = m.author_id === me();
  const author = displayName(S.users.get(m.author_id));
  const classes = ['msg', mine && 'mine', m.deleted && 'deleted', m.pending && 'pending', m.failed && 'failed'];
  const node = h('article', { class: classes.filter(Boolean).join(' '), id: `m-${m.id}`, dataset: { id: m.id } });
  node.setAttribute('aria-label', `${author}${m.sent_at ? `, ${timeFormat.format(new Date(m.sent_at))}` : ''}`);
  const head = h('div', { class: 'msg-head' }, h('span', { class: 'author' }, author), ' ',
    m.sent_at ? h('time', { datetime: m.sent_at }, timeFormat.format(new Date(m.sent_at))) : null,
    m.edited_at && !m.deleted ? h('span', { class: 'edited' }, ' (edited)') : null);
  node.append(head);
  if (m.reply_to) {
    const parent = S.open && store(S.open.key).messages.get(m.reply_to);
    const quote = parent ? `${displayName(S.users.get(parent.author_id))}: ${parent.deleted ? 'deleted message' : parent.text.slice(0, 120)}` : 'an earlier message';
    node.append(h('p', { class: 'reply-quote' }, `↪ ${quote}`));
  }
  node.append(h('p', { class: 'text' }, m.deleted ? 'This message was deleted.' : m.text));
  if (m.reactions?.length && !m.deleted) {
    node.append(h('div', { class: 'reactions' }, ...m.reactions.map((r) => {
      const mineToo = r.user_ids.includes(me());
      const b = h('button', { type: 'button', class: 'reaction', onclick: () => react(m, r.emoji, !mineToo) }, `${r.emoji} ${r.count}`);
      b.setAttribute('aria-pressed', String(mineToo));
      b.setAttribute('aria-label', `${r.emoji} ${r.count}, ${mineToo ? 'remove your reaction' : 'react too'}`);
      return b;
    })));
  }
  if (m.pending || m.failed) {
    node.append(h('p', { class: 'status' }, m.failed ? 'Not sent. ' : 'Sending…',
      m.failed ? h('button', { type: 'button', class: 'link', onclick: () => sendMessage(m) }, 'Retry') : null));
  } else if (!m.deleted) {
    const actions = h('div', { class: 'msg-actions' },
      h('button', { type: 'button', onclick: () => setCompose({ mode: 'reply', message: m }), 'aria-label': `Reply to ${author}` }, 'Reply'),
      ...(S.ctx.config.features?.reactions === false ? [] : EMOJI.slice(0, 2).map((e) =>
        h('button', { type: 'button', onclick: () => react(m, e, true), 'aria-label': `React with ${e}` }, e))),
      mine ? h('button', { type: 'button', onclick: () => setCompose({ mode: 'edit', message: m }) }, 'Edit') : null,
      mine || (S.open?.kind === 'thread' && ['owner', 'admin'].includes(S.page?.role))
        ? h('button', { type: 'button', class: 'danger', onclick: () => removeMessage(m) }, 'Delete') : null);
    node.append(actions);
  }
  return node;
}

function separator(m) {
  const s = h('div', { class: 'day', role: 'separator' }, dayLabel(m));
  s.dataset.day = dayOf(m);
  return s;
}

function atBottom(list) {
  return list.scrollHeight - list.scrollTop - list.clientHeight < 40;
}

function renderMessages({ keepPosition = false } = {}) {
  const list = S.$('#message-list');
  const st = store(S.open.key);
  const before = list.scrollHeight - list.scrollTop;
  const nodes = [];
  let day = null;
  if (st.hasOlder) nodes.push(h('p', { class: 'older' }, h('button', { type: 'button', class: 'link', onclick: loadOlder }, 'Load older messages')));
  else nodes.push(h('p', { class: 'older muted' }, 'This is the beginning of the conversation.'));
  for (const m of sorted(st)) {
    if (dayOf(m) !== day) { day = dayOf(m); nodes.push(separator(m)); }
    nodes.push(messageNode(m));
  }
  S.renderedDay = day;
  list.replaceChildren(...nodes);
  if (keepPosition) list.scrollTop = list.scrollHeight - before;
  else list.scrollTop = list.scrollHeight;
}

/** A live message: appended in place, so nothing above it moves. */
function appendOrUpdate(m) {
  const list = S.$('#message-list');
  const existing = list.querySelector(`#m-${CSS.escape(m.id)}`);
  if (existing) { existing.replaceWith(messageNode(m)); return; }
  const last = [...list.querySelectorAll('article.msg')].pop();
  const lastMessage = last && store(S.open.key).messages.get(last.dataset.id);
  if (lastMessage && lastMessage.sent_at && m.sent_at && m.sent_at < lastMessage.sent_at) {
    renderMessages({ keepPosition: true });
    return;
  }
  const stick = atBottom(list);
  if (dayOf(m) !== S.renderedDay) { list.append(separator(m)); S.renderedDay = dayOf(m); }
  // Pending messages stay last: a message from someone else goes before them.
  const firstPending = list.querySelector('article.msg.pending');
  const node = messageNode(m);
  if (firstPending && !m.pending) firstPending.before(node); else list.append(node);
  if (stick || m.author_id === me()) list.scrollTop = list.scrollHeight;
  else S.$('#new-below').hidden = false;
}

async function openConversation() {
  const st = store(S.open.key);
  const list = S.$('#message-list');
  S.$('#conversation-title').textContent = conversationTitle();
  S.$('#new-below').hidden = true;
  // A chat, or a conversation that appeared after the page was loaded: its latest messages.
  if (!st.loadedOnce) {
    const { messages } = S.open.kind === 'chat'
      ? await call('chats/ListMessages', { chat_id: S.open.id, limit: 25 })
      : await call('threads/ListMessages', { conversation_id: S.open.id, limit: 25 });
    for (const m of messages) if (!st.messages.has(m.id)) st.messages.set(m.id, m);
    st.hasOlder = messages.length === 25;
    const chat = S.chats.find((c) => c.id === S.open.id);
    await ensureUsers([...(chat?.user_ids ?? []), ...messages.map((m) => m.author_id)]);
  }
  st.loadedOnce = true;
  await ensureUsers([...st.messages.values()].map((m) => m.author_id));
  renderMessages();
  if (list.isConnected) S.$('#composer-text').focus({ preventScroll: true });
  S.$('#composer-text').value = S.ctx.storage.get(`draft:${S.open.key}`, '');
  markSeenSoon();
}

async function loadOlder() {
  const open = S.open;
  const st = store(open.key);
  if (st.loading || !st.hasOlder) return;
  const oldest = sorted(st).find((m) => m.sent_at);
  st.loading = true;
  try {
    const body = { limit: 25, ...(oldest ? { sent_before: oldest.sent_at } : {}) };
    const { messages } = open.kind === 'thread'
      ? await call('threads/ListMessages', { conversation_id: open.id, ...body })
      : await call('chats/ListMessages', { chat_id: open.id, ...body });
    for (const m of messages) st.messages.set(m.id, m);
    st.hasOlder = messages.length === 25;
    await ensureUsers(messages.map((m) => m.author_id));
    if (S.open === open) renderMessages({ keepPosition: true });
  } catch (e) {
    S.ctx.announce(`Could not load older messages: ${e.detail}`);
  } finally {
    st.loading = false;
  }
}

function renderTyping() {
  const names = [...S.typing.keys()].map((id) => displayName(S.users.get(id)));
  S.$('#typing').textContent = names.length === 0 ? '' : `${names.join(', ')} ${names.length === 1 ? 'is' : 'are'} typing…`;
}

// ---------------------------------------------------------------------------------------------
// Actions
// ---------------------------------------------------------------------------------------------
function newId() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
}

function setCompose(compose) {
  S.compose = compose;
  const box = S.$('#composer-context');
  const text = S.$('#composer-text');
  box.hidden = !compose;
  if (!compose) return;
  const who = displayName(S.users.get(compose.message.author_id));
  S.$('#composer-context-text').textContent = compose.mode === 'reply'
    ? `Replying to ${who}: ${compose.message.text.slice(0, 80)}` : 'Editing your message';
  if (compose.mode === 'edit') text.value = compose.message.text;
  text.focus();
}

async function submitComposer() {
  const form = S.$('#composer');
  const text = S.$('#composer-text');
  clearFormErrors(form);
  const value = text.value;
  if (!value.trim() || !S.open) return;
  const max = S.ctx.config.limits?.max_text_length ?? 4000;
  if ([...value].length > max) {
    showFormError(form, new S.ctx.api.ApiError({ code: 400, detail: `text: must be at most ${max} characters` }));
    return;
  }
  const compose = S.compose;
  if (compose?.mode === 'edit') {
    try {
      const method = S.open.kind === 'thread' ? 'threads/UpdateMessage' : 'chats/UpdateMessage';
      const { message } = await call(method, { id: compose.message.id, text: value });
      upsert(message);
      text.value = '';
      setCompose(null);
    } catch (e) { showFormError(form, e); }
    return;
  }
  const m = {
    id: newId(), author_id: me(), text: value, sent_at: null, pending: true,
    ...(S.open.kind === 'thread' ? { conversation_id: S.open.id } : { chat_id: S.open.id }),
    ...(compose?.mode === 'reply' ? { reply_to: compose.message.id } : {}),
  };
  text.value = '';
  S.ctx.storage.remove(`draft:${S.open.key}`);
  setCompose(null);
  store(S.open.key).messages.set(m.id, m);
  appendOrUpdate(m);
  await sendMessage(m);
}

/** Sends (or re-sends) an optimistic message; its id makes repeats harmless. */
async function sendMessage(m, attempt = 0) {
  const key = keyOf(m);
  m.pending = true;
  m.failed = false;
  if (S.open?.key === key && attempt === 0) appendOrUpdate(m);
  const body = { id: m.id, text: m.text, ...(m.reply_to ? { reply_to: m.reply_to } : {}) };
  try {
    const { message } = m.conversation_id
      ? await call('threads/CreateMessage', { ...body, conversation_id: m.conversation_id })
      : await call('chats/CreateMessage', { ...body, chat_id: m.chat_id });
    if (S) upsert(message);
  } catch (e) {
    if (!S) return;
    if (e.isNetwork && attempt < 3) {
      setTimeout(() => S && sendMessage(m, attempt + 1), 1000 * 2 ** attempt);
      return;
    }
    m.pending = false;
    m.failed = true;
    if (S.open?.key === key) {
      appendOrUpdate(m);
      if (!e.isNetwork) showFormError(S.$('#composer'), e);
    }
  }
}

function upsert(m) {
  const key = keyOf(m);
  const st = store(key);
  const known = st.messages.get(m.id);
  st.messages.set(m.id, { ...m, pending: false, failed: false });
  if (S.open?.key === key) {
    const node = S.$(`#m-${CSS.escape(m.id)}`);
    if (known?.pending && node) node.remove(); // re-placed by its real time
    appendOrUpdate(st.messages.get(m.id));
  }
  return known;
}

async function react(m, emoji, add) {
  const kind = m.conversation_id ? 'threads' : 'chats';
  try {
    const { message } = await call(`${kind}/${add ? 'AddReaction' : 'RemoveReaction'}`, { message_id: m.id, emoji });
    upsert(message);
  } catch (e) { S?.ctx.announce(`Reaction failed: ${e.detail}`); }
}

async function removeMessage(m) {
  if (!confirm('Delete this message?')) return;
  const kind = m.conversation_id ? 'threads' : 'chats';
  try {
    const { message } = await call(`${kind}/DeleteMessage`, { id: m.id });
    upsert(message);
  } catch (e) { S?.ctx.announce(`Delete failed: ${e.detail}`); }
}

async function openPrivateChat(member) {
  try {
    const chatId = member.chat?.id ?? (await call('chats/CreateChat', { user_ids: [member.id] })).chat.id;
    if (!S.chats.some((c) => c.id === chatId)) {
      S.chats = (await call('chats/List', {})).chats ?? [];
    }
    S.ctx.navigate(`/chats/${chatId}`);
  } catch (e) { S.ctx.announce(`Could not open the chat: ${e.detail}`); }
}

/** Tells the others at most every 2 s (the server's limit); typing during the pause is sent after it. */
function sendTyping() {
  if (!S.open || S.ctx.config.features?.typing === false || S.typingTimer) return;
  const wait = S.lastTyping + 2100 - Date.now();
  if (wait > 0) {
    S.typingTimer = setTimeout(() => { if (S) { S.typingTimer = null; if (S.$('#composer-text').value) sendTyping(); } }, wait);
    return;
  }
  S.lastTyping = Date.now();
  S.ctx.realtime.send(S.open.kind === 'thread' ? { type: 'typing', conversation_id: S.open.id } : { type: 'typing', chat_id: S.open.id });
}

// ---------------------------------------------------------------------------------------------
// Live events
// ---------------------------------------------------------------------------------------------
function onMessageEvent(m) {
  const key = keyOf(m);
  const isOpen = S.open?.key === key;
  const known = S.stores.has(key) ? store(key).messages.get(m.id) : null;
  if (S.stores.has(key) || isOpen) {
    upsert(m);
  }
  if (m.author_id !== me() && !known && !m.deleted) {
    if (isOpen && document.visibilityState !== 'hidden') {
      markSeenSoon();
    } else {
      const bucket = m.conversation_id ? 'threads' : 'chats';
      const id = m.conversation_id ?? m.chat_id;
      S.unread[bucket][id] = (S.unread[bucket][id] ?? 0) + 1;
      renderBadges();
      refreshUnreadSoon();
    }
  }
  if (m.chat_id && !S.chats.some((c) => c.id === m.chat_id)) refreshChats();
  if (isOpen && S.typing.has(m.author_id)) { clearTimeout(S.typing.get(m.author_id)); S.typing.delete(m.author_id); renderTyping(); }
}

function onReaction(data, frame) {
  const key = data.conversation_id ? `t:${data.conversation_id}` : `c:${data.chat_id}`;
  if (!S.stores.has(key)) return;
  const m = store(key).messages.get(data.message_id);
  if (!m) return;
  const reactions = (m.reactions ?? []).map((r) => ({ ...r, user_ids: [...r.user_ids] }));
  let r = reactions.find((x) => x.emoji === data.emoji);
  if (frame.event === 'reaction.added') {
    if (!r) { r = { emoji: data.emoji, count: 0, user_ids: [] }; reactions.push(r); }
    if (!r.user_ids.includes(data.user_id)) { r.user_ids.push(data.user_id); r.count = r.user_ids.length; }
  } else if (r) {
    r.user_ids = r.user_ids.filter((u) => u !== data.user_id);
    r.count = r.user_ids.length;
  }
  upsert({ ...m, reactions: reactions.filter((x) => x.count > 0) });
}

async function refreshChats() {
  try {
    S.chats = (await call('chats/List', {})).chats ?? [];
    await ensureUsers(S.chats.flatMap((c) => c.user_ids));
    if (S) renderGroups();
  } catch { /* shown on the next load */ }
}

async function refreshGroups() {
  try {
    await loadGroups();
    if (!S) return;
    if (S.page && !S.groups.some((g) => g.id === S.page.id)) { S.ctx.navigate('/groups'); return; }
    renderGroups();
  } catch { /* shown on the next load */ }
}

async function refreshPage() {
  if (!S.page) return;
  try {
    await loadPage(S.page.id);
    if (!S) return;
    renderGroup();
    renderBadges();
    if (S.open) renderMessages({ keepPosition: true });
  } catch (e) {
    if (e.code === 404) S.ctx.navigate('/groups');
  }
}

/** Membership changed: only the members part of the page (`?fields=members`). */
async function refreshMembers() {
  if (!S.page) return;
  const id = S.page.id;
  try {
    const part = await S.ctx.api.page(`/api/groups/${encodeURIComponent(id)}?fields=members`);
    if (!S || S.page?.id !== id) return;
    S.page.members = part.members;
    if (part.role) S.page.role = part.role;
    remember(part.members);
    renderGroup();
    loadPresence();
  } catch (e) {
    if (e.code === 404 && S) S.ctx.navigate('/groups');
  }
}

function listen(ctx) {
  const rt = ctx.realtime;
  rt.on('message.created', onMessageEvent);
  rt.on('message.updated', onMessageEvent);
  rt.on('message.deleted', onMessageEvent);
  rt.on('reaction.added', onReaction);
  rt.on('reaction.removed', onReaction);
  rt.on('conversation.created', (c) => {
    S.convGroup.set(c.id, c.group_id);
    const list = S.conversations.get(c.group_id) ?? [];
    if (!list.some((x) => x.id === c.id)) list.push(c);
    S.conversations.set(c.group_id, list);
    if (S.page?.id === c.group_id && !S.page.threads.some((t) => t.id === c.id)) {
      S.page.threads.push({ id: c.id, topic: c.topic, unread: 0, messages: [] });
      renderGroup();
    }
  });
  for (const e of ['conversation.updated', 'conversation.deleted', 'group.updated']) rt.on(e, () => refreshPage());
  rt.on('member.joined', (d) => { if (d.user_id === me()) refreshGroups(); if (S.page?.id === d.group_id) refreshMembers(); });
  rt.on('member.left', (d) => { if (d.user_id === me()) refreshGroups(); else if (S.page?.id === d.group_id) refreshMembers(); });
  rt.on('member.role_changed', (d) => { if (S.page?.id === d.group_id) refreshMembers(); });
  for (const e of ['group.created', 'group.deleted']) rt.on(e, () => refreshGroups());
  rt.on('chat.created', () => refreshChats());
  rt.on('seen.updated', () => refreshUnreadSoon());
  rt.on('reload', () => { refreshGroups(); refreshPage(); });
  rt.on('typing', (f) => {
    if (!S.open || f.user_id === me()) return;
    if ((f.conversation_id ?? f.chat_id) !== S.open.id) return;
    clearTimeout(S.typing.get(f.user_id));
    S.typing.set(f.user_id, setTimeout(() => { S?.typing.delete(f.user_id); if (S) renderTyping(); }, 4000));
    renderTyping();
  });
  rt.on('presence', (f) => {
    S.presence.set(f.user_id, f.online);
    for (const dot of ctx.root.querySelectorAll(`.presence[data-user-id="${CSS.escape(f.user_id)}"]`)) {
      dot.classList.toggle('online', f.online);
      dot.setAttribute('aria-label', f.online ? 'online' : 'offline');
    }
  });
}

async function loadPresence() {
  if (!S.page) return;
  try {
    const { users } = await call('streams/Presence', { user_ids: S.page.members.map((m) => m.id) });
    for (const [id, p] of Object.entries(users ?? {})) S.presence.set(id, p.online);
    renderGroup();
  } catch { /* dots stay grey */ }
}

// ---------------------------------------------------------------------------------------------
// Wiring the markup
// ---------------------------------------------------------------------------------------------
function on(el, type, fn) {
  el.addEventListener(type, fn);
  S.listeners.push(() => el.removeEventListener(type, fn));
}

function wire(ctx) {
  const $ = S.$;
  on($('#new-group-form'), 'submit', async (e) => {
    e.preventDefault();
    const form = e.currentTarget;
    clearFormErrors(form);
    await busy(form, async () => {
      try {
        const { group } = await call('groups/Create', { name: form.elements.name.value });
        // A new group starts with one conversation, so there is somewhere to talk.
        await call('threads/CreateConversation', { group_id: group.id, topic: 'General' });
        form.reset();
        await refreshGroups();
        ctx.navigate(`/groups/${group.id}`);
      } catch (err) {
        if (err.field === 'name') err.field = 'name';
        showFormError(form, err);
      }
    });
  });
  on($('#new-conversation-form'), 'submit', async (e) => {
    e.preventDefault();
    const form = e.currentTarget;
    clearFormErrors(form);
    await busy(form, async () => {
      try {
        const { conversation } = await call('threads/CreateConversation', { group_id: S.page.id, topic: form.elements.topic.value });
        form.reset();
        S.convGroup.set(conversation.id, S.page.id);
        if (!S.page.threads.some((t) => t.id === conversation.id)) {
          S.page.threads.push({ id: conversation.id, topic: conversation.topic, unread: 0, messages: [] });
        }
        ctx.navigate(`/groups/${S.page.id}/${conversation.id}`);
      } catch (err) { showFormError(form, err); }
    });
  });
  on($('#create-link'), 'click', async () => {
    try {
      const { invite } = await call('invites/Create', { group_id: S.page.id });
      $('#invite-link').value = new URL(`/invite/${invite.code}`, location.href).href;
      $('#invite-link-box').hidden = false;
      $('#invite-link').select();
      ctx.announce('Invite link created');
    } catch (e) { ctx.announce(`Could not create a link: ${e.detail}`); }
  });
  on($('#copy-link'), 'click', async () => {
    const input = $('#invite-link');
    try { await navigator.clipboard.writeText(input.value); } catch { input.select(); document.execCommand?.('copy'); }
    $('#copy-link').textContent = 'Copied';
    ctx.announce('Link copied');
  });
  on($('#invite-email-form'), 'submit', async (e) => {
    e.preventDefault();
    const form = e.currentTarget;
    clearFormErrors(form);
    await busy(form, async () => {
      try {
        const email = form.elements.email.value.trim();
        const { invite } = await call('invites/Create', { group_id: S.page.id, email });
        $('#invite-email-result').textContent = `Invited ${email}. Send them this link: ${new URL(`/invite/${invite.code}`, location.href).href}`;
        form.reset();
      } catch (err) { showFormError(form, err); }
    });
  });
  on($('#search-form'), 'submit', async (e) => {
    e.preventDefault();
    const form = e.currentTarget;
    clearFormErrors(form);
    const query = form.elements.query.value.trim();
    const results = $('#search-results');
    if (!query) { results.replaceChildren(); return; }
    try {
      const { messages } = await call('threads/Search', { query, group_id: S.page.id, limit: 20 });
      await ensureUsers(messages.map((m) => m.author_id));
      results.replaceChildren(...(messages.length ? messages.map((m) => h('li', {},
        h('a', { href: `/groups/${S.page.id}/${m.conversation_id}` }, `${displayName(S.users.get(m.author_id))}: ${m.text.slice(0, 140)}`))) : [h('li', { class: 'muted' }, 'Nothing found.')]));
    } catch (err) { showFormError(form, err); }
  });
  const text = $('#composer-text');
  on($('#composer'), 'submit', (e) => { e.preventDefault(); submitComposer(); });
  on(text, 'keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); submitComposer(); }
    if (e.key === 'Escape' && S.compose) { setCompose(null); text.value = ''; }
  });
  on(text, 'input', () => {
    sendTyping();
    if (S.open) S.ctx.storage.set(`draft:${S.open.key}`, text.value);
  });
  on($('#composer-cancel'), 'click', () => { if (S.compose?.mode === 'edit') text.value = ''; setCompose(null); });
  const list = $('#message-list');
  on(list, 'scroll', () => {
    if (list.scrollTop < 60 && S.open && store(S.open.key).hasOlder) loadOlder();
    if (atBottom(list)) { $('#new-below').hidden = true; markSeenSoon(); }
  });
  on($('#new-below'), 'click', () => { list.scrollTop = list.scrollHeight; $('#new-below').hidden = true; });
  on(document, 'visibilitychange', () => { if (document.visibilityState === 'visible') markSeenSoon(); });
  on(window, 'pagehide', () => flushSeen(true));
}

window.verteilt.register('chat', {
  async beforeMount(ctx) {
    S = newState(ctx);
    // A debugging handle for the console; bootstrap removes it when the chat is unloaded.
    window.verteiltChat = { get state() { return S; } };
    wire(ctx);
    listen(ctx);
    const [section, first] = ctx.segments;
    if (section === 'groups' && first) {
      // The group page comes first (one round trip) and is shown as soon as it is here; the
      // list of all groups fills in behind it. The page carries the cursor it was taken at: the
      // feed resumes from there, so nothing between the page and the connection is missed.
      const groups = loadGroups().then(() => { if (S?.ctx === ctx) { renderGroups(); renderBadges(); } });
      const page = await loadPage(first).catch((e) => e);
      if (!(page instanceof Error)) ctx.realtime.start(page.cursor);
      else { await ctx.realtime.start(); await groups; }
    } else {
      await ctx.realtime.start();
      await loadGroups();
    }
    try { await show(ctx); } catch (e) { failed(ctx, e); }
  },
  mount() {
    // beforeMount rendered into a detached tree, where scrolling does nothing: start at the end now.
    const list = S.$('#message-list');
    if (S.open) {
      list.scrollTop = list.scrollHeight;
      S.$('#composer-text').focus({ preventScroll: true });
    }
    loadPresence();
  },
  async update(ctx) {
    try {
      const before = S.page?.id;
      await show(ctx);
      if (S.page && S.page.id !== before) loadPresence();
    } catch (e) { failed(ctx, e); }
  },
  unmount() {
    flushSeen();
    for (const off of S.listeners.splice(0)) off();
    S.typing.forEach((t) => clearTimeout(t));
    clearTimeout(S.unreadTimer);
    clearTimeout(S.seenTimer);
    clearTimeout(S.typingTimer);
  },
  afterUnmount() {
    S = null;
  },
});
