// chat's live side: events from the one realtime connection applied to what is on screen.
import { S, call, ensureUsers, keyOf, loadGroups, loadPage, markSeenSoon, me, refreshUnreadSoon, remember, store } from './state.js';
import { renderBadges, renderGroup, renderGroups } from './lists.js';
import { renderMessages, renderTyping, upsert } from './messages.js';

export function onMessageEvent(m) {
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

export function onReaction(data, frame) {
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

export async function refreshChats() {
  try {
    S.chats = (await call('chats/List', {})).chats ?? [];
    await ensureUsers(S.chats.flatMap((c) => c.user_ids));
    if (S) renderGroups();
  } catch { /* shown on the next load */ }
}

export async function refreshGroups() {
  try {
    await loadGroups();
    if (!S) return;
    if (S.page && !S.groups.some((g) => g.id === S.page.id)) { S.ctx.navigate('/groups'); return; }
    renderGroups();
  } catch { /* shown on the next load */ }
}

export async function refreshPage() {
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
export async function refreshMembers() {
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

export function listen(ctx) {
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

export async function loadPresence() {
  if (!S.page) return;
  try {
    const { users } = await call('streams/Presence', { user_ids: S.page.members.map((m) => m.id) });
    for (const [id, p] of Object.entries(users ?? {})) S.presence.set(id, p.online);
    renderGroup();
  } catch { /* dots stay grey */ }
}
