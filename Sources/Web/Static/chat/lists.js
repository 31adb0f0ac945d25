// chat's lists: groups, private chats, a group's conversations and members, unread badges.
import { displayName, h } from '../shared/dom.js';
import { S, me } from './state.js';
import { openPrivateChat } from './messages.js';

export function badge(n, label) {
  const b = h('span', { class: 'badge', dataset: { count: String(n) } }, String(n));
  b.setAttribute('aria-label', `${n} unread ${label}`);
  b.hidden = !n;
  return b;
}

export function groupUnread(groupId) {
  return (S.conversations.get(groupId) ?? []).reduce((sum, c) => sum + (S.unread.threads[c.id] ?? 0), 0);
}

export function renderGroups() {
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

export function chatName(chat) {
  const others = chat.user_ids.filter((id) => id !== me());
  return others.map((id) => displayName(S.users.get(id))).join(', ') || 'Just you';
}

export function renderGroup() {
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

export function renderBadges() {
  for (const a of S.ctx.root.querySelectorAll('a[data-group-id]')) setBadge(a, groupUnread(a.dataset.groupId));
  for (const a of S.ctx.root.querySelectorAll('a[data-conversation-id]')) setBadge(a, S.unread.threads[a.dataset.conversationId] ?? 0);
  for (const a of S.ctx.root.querySelectorAll('a[data-chat-id]')) setBadge(a, S.unread.chats[a.dataset.chatId] ?? 0);
}

export function setBadge(a, n) {
  const b = a.querySelector('.badge');
  if (!b) return;
  b.textContent = String(n);
  b.dataset.count = String(n);
  b.setAttribute('aria-label', `${n} unread messages`);
  b.hidden = !n;
}

export function conversationTitle() {
  if (!S.open) return '';
  if (S.open.kind === 'thread') return `# ${S.page?.threads.find((t) => t.id === S.open.id)?.topic ?? ''}`;
  const chat = S.chats.find((c) => c.id === S.open.id);
  return chat ? chatName(chat) : 'Private chat';
}
