// chat: groups, conversations, private chats, the message list and the composer.
// Routes: /groups, /groups/{group}, /groups/{group}/{conversation}, /chats, /chats/{chat}.
import { busy, clearFormErrors, displayName, h, showFormError } from '../shared/dom.js';
import { S, begin, call, end, ensureUsers, flushSeen, loadGroups, loadPage, markSeenSoon, store } from './state.js';
import { conversationTitle, renderBadges, renderGroup, renderGroups } from './lists.js';
import { atBottom, loadOlder, openConversation, renderTyping, sendTyping, setCompose, submitComposer } from './messages.js';
import { listen, loadPresence, refreshGroups } from './live.js';

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
    begin(ctx);
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
    end();
  },
});
