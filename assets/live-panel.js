// The demo's live panel: the scheduler's demo.clock and demo.system, shown in #clock and #system.
export const LIVE_GROUPS = ["demo.clock", "demo.system"];

/** Shows `msg` in the panel when it is one of {@link LIVE_GROUPS}; says whether it was. */
export function showLive(msg) {
  const $ = (id) => document.getElementById(id);
  if (msg.group === "demo.clock") {
    $("clock").textContent = new Date(msg.data.unix_ms).toLocaleTimeString();
  } else if (msg.group === "demo.system") {
    const gib = (b) => (b / 2 ** 30).toFixed(1);
    const m = msg.data.memory;
    $("system").textContent = `load ${msg.data.load.join(" / ")}, ${gib(m.available_bytes)} of ${gib(m.total_bytes)} GiB free`;
  } else {
    return false;
  }
  return true;
}
