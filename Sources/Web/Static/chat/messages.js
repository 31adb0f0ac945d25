// chat's conversation view: the message list (day separators, replies, reactions, older pages)
// and the composer (optimistic send with an idempotency key and retry, edit, reply, typing).
import { clearFormErrors, displayName, h, showFormError } from '../shared/dom.js';
import { EMOJI, S, call, ensureUsers, keyOf, markSeenSoon, me, sorted, store } from './state.js';
import { conversationTitle } from './lists.js';

export const dayFormat = new Intl.DateTimeFormat(undefined, { weekday: 'long', day: 'numeric', month: 'long', year: 'numeric' });
export const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });

export function dayOf(m) {
  const d = m.sent_at ? new Date(m.sent_at) : new Date();
  return d.toDateString();
}

export function dayLabel(m) {
  const d = m.sent_at ? new Date(m.sent_at) : new Date();
  const today = new Date();
  const yesterday = new Date(Date.now() - 86400000);
  if (d.toDateString() === today.toDateString()) return 'Today';
  if (d.toDateString() === yesterday.toDateString()) return 'Yesterday';
  return dayFormat.format(d);
}

/** The viewer's own `@username` in a text that mentions them: the same rule as the server's
 * (no name character before it, no longer name after it), case-insensitive. */
function mentionPattern() {
  const name = S.ctx.user?.username;
  if (!name) return null;
  const escaped = name.replace(/[.*+?^${}()|[\]\\-]/g, '\\$&');
  return new RegExp(`(?<![A-Za-z0-9_.-])@${escaped}(?![A-Za-z0-9_]|[.-]+[A-Za-z0-9_])`, 'gi');
}

/** The message's text as text nodes, the viewer's mentions in <mark>: never parsed as HTML. */
function messageText(m, mentionsMe) {
  const p = h('p', { class: 'text' });
  if (m.deleted) { p.append('This message was deleted.'); return p; }
  const pattern = mentionsMe ? mentionPattern() : null;
  let at = 0;
  for (const match of pattern ? m.text.matchAll(pattern) : []) {
    p.append(m.text.slice(at, match.index), h('mark', { class: 'mention' }, match[0]));
    at = match.index + match[0].length;
  }
  p.append(m.text.slice(at));
  return p;
}

export function messageNode(m) {
  const mine = m.author_id === me();
  const author = displayName(S.users.get(m.author_id));
  const mentionsMe = !m.deleted && (m.mentions ?? []).includes(me());
  const classes = ['msg', mine && 'mine', mentionsMe && 'mentions-me', m.deleted && 'deleted', m.pending && 'pending', m.failed && 'failed'];
  const node = h('article', { class: classes.filter(Boolean).join(' '), id: `m-${m.id}`, dataset: { id: m.id } });
  node.setAttribute('aria-label', `${author}${m.sent_at ? `, ${timeFormat.format(new Date(m.sent_at))}` : ''}${mentionsMe ? ', mentions you' : ''}`);
  const head = h('div', { class: 'msg-head' }, h('span', { class: 'author' }, author), ' ',
    m.sent_at ? h('time', { datetime: m.sent_at }, timeFormat.format(new Date(m.sent_at))) : null,
    m.edited_at && !m.deleted ? h('span', { class: 'edited' }, ' (edited)') : null);
  node.append(head);
  if (m.reply_to) {
    const parent = S.open && store(S.open.key).messages.get(m.reply_to);
    const quote = parent ? `${displayName(S.users.get(parent.author_id))}: ${parent.deleted ? 'deleted message' : parent.text.slice(0, 120)}` : 'an earlier message';
    node.append(h('p', { class: 'reply-quote' }, `↪ ${quote}`));
  }
  node.append(messageText(m, mentionsMe));
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

export function separator(m) {
  const s = h('div', { class: 'day', role: 'separator' }, dayLabel(m));
  s.dataset.day = dayOf(m);
  return s;
}

export function atBottom(list) {
  return list.scrollHeight - list.scrollTop - list.clientHeight < 40;
}

export function renderMessages({ keepPosition = false } = {}) {
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
export function appendOrUpdate(m) {
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

export async function openConversation() {
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

export async function loadOlder() {
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

export function renderTyping() {
  const names = [...S.typing.keys()].map((id) => displayName(S.users.get(id)));
  S.$('#typing').textContent = names.length === 0 ? '' : `${names.join(', ')} ${names.length === 1 ? 'is' : 'are'} typing…`;
}

export function newId() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
}

export function setCompose(compose) {
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

export async function submitComposer() {
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
export async function sendMessage(m, attempt = 0) {
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

export function upsert(m) {
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

export async function react(m, emoji, add) {
  const kind = m.conversation_id ? 'threads' : 'chats';
  try {
    const { message } = await call(`${kind}/${add ? 'AddReaction' : 'RemoveReaction'}`, { message_id: m.id, emoji });
    upsert(message);
  } catch (e) { S?.ctx.announce(`Reaction failed: ${e.detail}`); }
}

export async function removeMessage(m) {
  if (!confirm('Delete this message?')) return;
  const kind = m.conversation_id ? 'threads' : 'chats';
  try {
    const { message } = await call(`${kind}/DeleteMessage`, { id: m.id });
    upsert(message);
  } catch (e) { S?.ctx.announce(`Delete failed: ${e.detail}`); }
}

export async function openPrivateChat(member) {
  try {
    const chatId = member.chat?.id ?? (await call('chats/CreateChat', { user_ids: [member.id] })).chat.id;
    if (!S.chats.some((c) => c.id === chatId)) {
      S.chats = (await call('chats/List', {})).chats ?? [];
    }
    S.ctx.navigate(`/chats/${chatId}`);
  } catch (e) { S.ctx.announce(`Could not open the chat: ${e.detail}`); }
}

/** Tells the others at most every 2 s (the server's limit); typing during the pause is sent after it. */
export function sendTyping() {
  if (!S.open || S.ctx.config.features?.typing === false || S.typingTimer) return;
  const wait = S.lastTyping + 2100 - Date.now();
  if (wait > 0) {
    S.typingTimer = setTimeout(() => { if (S) { S.typingTimer = null; if (S.$('#composer-text').value) sendTyping(); } }, wait);
    return;
  }
  S.lastTyping = Date.now();
  S.ctx.realtime.send(S.open.kind === 'thread' ? { type: 'typing', conversation_id: S.open.id } : { type: 'typing', chat_id: S.open.id });
}
