// invite: /invite/{code} shows whose invitation to which group, and joins it.
let accept = null;

async function show(ctx) {
  const $ = (s) => ctx.root.querySelector(s);
  const code = ctx.segments[1] ?? '';
  $('#invite-error').textContent = '';
  $('#invite-signed-in').hidden = true;
  $('#invite-signed-out').hidden = true;
  if (!code) { $('#invite-text').textContent = 'This link has no invitation code.'; return; }
  let preview;
  try {
    preview = await ctx.api.call('invites/Preview', { code });
  } catch (e) {
    $('#invite-title').textContent = 'Invitation not valid';
    $('#invite-text').textContent = e.code === 404
      ? 'This invitation has expired, was withdrawn, or has been used up. Ask for a new link.'
      : `Could not read the invitation: ${e.detail}`;
    ctx.setTitle('Invitation not valid');
    return;
  }
  const who = preview.inviter_name ? `${preview.inviter_name} invites you` : 'You are invited';
  $('#invite-title').textContent = `Join ${preview.group_name}`;
  $('#invite-text').textContent = `${who} to join “${preview.group_name}”.`;
  ctx.setTitle(`Join ${preview.group_name}`);
  if (ctx.user) {
    const button = $('#invite-accept');
    button.textContent = `Join ${preview.group_name}`;
    $('#invite-signed-in').hidden = false;
    accept = async () => {
      button.disabled = true;
      try {
        const { group } = await ctx.api.call('invites/Accept', { code });
        ctx.navigate(`/groups/${group.id}`, { replace: true });
      } catch (e) {
        $('#invite-error').textContent = e.detail;
        button.disabled = false;
      }
    };
    button.onclick = accept;
  } else {
    const next = encodeURIComponent(`/invite/${code}`);
    $('#invite-signup').setAttribute('href', `/account/signup?next=${next}`);
    $('#invite-login').setAttribute('href', `/account/login?next=${next}`);
    $('#invite-signed-out').hidden = false;
  }
}

window.verteilt.register('invite', {
  beforeMount: show,
  update: show,
  unmount(ctx) {
    ctx.root.querySelector('#invite-accept').onclick = null;
    accept = null;
  },
});
