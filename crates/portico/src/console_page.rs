//! The web console's entry page: sign-in with a browser session (cookie), then the
//! signed-in account, its merchants and, for operators, the review queue. It talks only
//! to the management API, with the CSRF header that cookie sessions require.

use axum::response::Html;

pub async fn page() -> Html<&'static str> {
    Html(PAGE)
}

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Portico console</title>
<style>
 body { font: 15px/1.5 system-ui, sans-serif; margin: 0; background: #f6f7f9; color: #1d232b; }
 header { background: #1d3557; color: #fff; padding: .8rem 1.5rem; display: flex; justify-content: space-between; align-items: center; }
 main { max-width: 60rem; margin: 1.5rem auto; padding: 0 1rem; }
 .card { background: #fff; border: 1px solid #dde1e6; border-radius: 6px; padding: 1rem 1.25rem; margin-bottom: 1rem; }
 label { display: block; margin: .5rem 0 .2rem; }
 input { width: 100%; max-width: 24rem; padding: .4rem; border: 1px solid #bbb; border-radius: 4px; }
 button { margin-top: .8rem; padding: .4rem 1rem; border: 0; border-radius: 4px; background: #1d3557; color: #fff; cursor: pointer; }
 table { border-collapse: collapse; width: 100%; } td, th { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid #eee; }
 .error { color: #b00020; } .muted { color: #666; } [hidden] { display: none; }
</style>
</head>
<body>
<header><strong>Portico console</strong><span id="who"></span></header>
<main>
 <section class="card" id="signin">
  <h2>Sign in</h2>
  <form id="signin-form">
   <label for="email">Email</label><input id="email" name="email" type="email" autocomplete="username" required>
   <label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required>
   <button type="submit">Sign in</button>
   <p class="error" id="signin-error" role="alert"></p>
  </form>
 </section>
 <section class="card" id="home" hidden>
  <h2 id="home-title"></h2>
  <p class="muted" id="home-role"></p>
  <h3>Merchants</h3>
  <table><thead><tr><th>Name</th><th>State</th><th>Id</th><th></th></tr></thead><tbody id="merchants"></tbody></table>
  <button id="signout">Sign out</button>
 </section>
 <p class="muted">API reference: <a href="/openapi.json">/openapi.json</a></p>
</main>
<script>
const $ = (id) => document.getElementById(id);
const csrf = () => (document.cookie.split('; ').find((c) => c.startsWith('portico_csrf=')) || '').split('=')[1] || '';
async function api(method, path, body) {
  const headers = { 'x-csrf-token': csrf() };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(path, { method, headers, credentials: 'same-origin', body: body === undefined ? undefined : JSON.stringify(body) });
  const env = await res.json();
  if (env.code !== 0) throw new Error(env.msg + ' (code ' + env.code + ', trace ' + env.trace_id + ')');
  return env.data;
}
function cell(text) { const td = document.createElement('td'); td.textContent = text; return td; }
async function showHome() {
  const me = await api('GET', '/api/v1/auth/me');
  $('signin').hidden = true; $('home').hidden = false;
  $('who').textContent = me.email;
  $('home-title').textContent = 'Welcome, ' + (me.display_name || me.email);
  $('home-role').textContent = 'Role: ' + me.role;
  const page = await api('GET', '/api/v1/merchants');
  const body = $('merchants'); body.replaceChildren();
  for (const m of page.items) {
    const tr = document.createElement('tr');
    tr.append(cell(m.name), cell(m.state), cell(m.id));
    const actions = document.createElement('td');
    if (m.state === 'pending_review' && ['super_admin', 'business_manager'].includes(me.role)) {
      const b = document.createElement('button'); b.textContent = 'Approve';
      b.onclick = async () => { await api('POST', '/api/v1/merchants/' + m.id + '/approve', {}); showHome(); };
      actions.append(b);
    }
    tr.append(actions); body.append(tr);
  }
}
$('signin-form').addEventListener('submit', async (e) => {
  e.preventDefault(); $('signin-error').textContent = '';
  try { await api('POST', '/api/v1/session', { email: $('email').value, password: $('password').value }); await showHome(); }
  catch (err) { $('signin-error').textContent = err.message; }
});
$('signout').addEventListener('click', async () => { await api('DELETE', '/api/v1/session'); location.reload(); });
showHome().catch(() => {});
</script>
</body>
</html>
"#;
