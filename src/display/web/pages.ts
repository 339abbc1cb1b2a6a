// The two pages of the browser viewer: the list of running vGPUs with live
// thumbnails, and a full viewer per instance (noVNC over our WebSocket).

const esc = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

export interface ListedDisplay {
  uuid: string;
  type: string;
  token: string;
  width: number;
  height: number;
  vnc: string | null;
  viewers: number;
}

export function listPage(displays: ListedDisplay[], adminToken: string): string {
  const cards = displays
    .map(
      (d) => `<a class="card" href="/vm/${d.uuid}?token=${d.token}">
  <img data-src="/vm/${d.uuid}/thumb.png?token=${d.token}" alt="screen of ${d.uuid}">
  <div><b>${esc(d.uuid.slice(0, 8))}</b> ${esc(d.type)}<br>${d.width}×${d.height}${d.vnc ? ` · VNC ${esc(d.vnc)}` : ''} · ${d.viewers} viewer(s)</div>
</a>`,
    )
    .join('\n');
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>mediated — displays</title>
<style>
body{font:14px system-ui,sans-serif;background:#1d1f21;color:#ddd;margin:20px}
h1{font-size:18px;font-weight:600}
.grid{display:flex;flex-wrap:wrap;gap:16px}
.card{display:block;width:320px;background:#2a2c2f;border-radius:6px;padding:8px;color:#ddd;text-decoration:none}
.card img{width:320px;height:200px;object-fit:contain;background:#000;display:block;margin-bottom:6px}
.empty{color:#999}
</style></head><body>
<h1>Running vGPUs</h1>
<div class="grid">${cards || '<p class="empty">No vGPU is running. Start one with <code>mediated start -p mediated0 -t mediated-bochs-medium</code>.</p>'}</div>
<script>
// Live thumbnails: refresh each picture about once a second.
const imgs = [...document.querySelectorAll('img[data-src]')];
function refresh() { for (const i of imgs) i.src = i.dataset.src + '&t=' + Date.now(); }
refresh(); setInterval(refresh, 1000);
// Pick up instances started or stopped meanwhile.
setTimeout(() => location.reload(), 15000);
</script>
<!-- ${esc(adminToken.slice(0, 0))} -->
</body></html>`;
}

export function viewerPage(uuid: string, token: string, viewOnly: boolean): string {
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>mediated — ${esc(uuid.slice(0, 8))}</title>
<style>
html,body{margin:0;height:100%;background:#000;color:#ccc;font:13px system-ui,sans-serif}
#bar{position:fixed;top:0;left:0;right:0;height:24px;line-height:24px;padding:0 8px;background:#222;z-index:2}
#screen{position:absolute;top:24px;left:0;right:0;bottom:0}
</style></head><body>
<div id="bar">${esc(uuid)} · <span id="status">connecting…</span></div>
<div id="screen"></div>
<script type="module">
import RFB from '/novnc/core/rfb.js';
const proto = location.protocol === 'https:' ? 'wss://' : 'ws://';
const url = proto + location.host + '/vm/${uuid}/ws?token=${encodeURIComponent(token)}${viewOnly ? '&view_only=1' : ''}';
const rfb = new RFB(document.getElementById('screen'), url, { shared: true });
rfb.scaleViewport = true;
rfb.viewOnly = ${viewOnly ? 'true' : 'false'};
const status = document.getElementById('status');
window.state = 'connecting';
rfb.addEventListener('connect', () => { status.textContent = 'connected'; window.state = 'connected'; });
rfb.addEventListener('disconnect', (e) => { status.textContent = e.detail.clean ? 'disconnected' : 'connection lost'; window.state = 'disconnected'; });
rfb.addEventListener('credentialsrequired', () => {
  const password = prompt('VNC password');
  rfb.sendCredentials({ password });
});
window.rfb = rfb;
</script>
</body></html>`;
}
