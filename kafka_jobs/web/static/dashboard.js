// Live parts: the overview refreshes its fragment; a replay page follows its progress.
(function () {
  "use strict";
  const live = document.getElementById("live");
  if (live) {
    const every = Math.max(1, parseFloat(live.dataset.every || "2")) * 1000;
    setInterval(async () => {
      try {
        const response = await fetch(live.dataset.src, { cache: "no-store" });
        if (response.ok) live.innerHTML = await response.text();
      } catch (error) { /* the server is away: keep what is shown */ }
    }, every);
  }
  const replay = document.getElementById("replay");
  if (replay) {
    const timer = setInterval(async () => {
      const response = await fetch(replay.dataset.src, { cache: "no-store" });
      if (!response.ok) return;
      const state = await response.json();
      document.getElementById("replay-state").textContent = state.state;
      document.getElementById("replay-done").textContent = state.done;
      const bar = replay.querySelector("progress");
      bar.max = state.total || state.asked;
      bar.value = state.done;
      if (state.state !== "running") clearInterval(timer);
    }, 500);
  }
})();
