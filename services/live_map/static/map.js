// Meridian's map pages: Leaflet, fed by the live-map service's Server-Sent Events.
// Tokens are read from the URL fragment (#token=…), which browsers never send to a server or put
// in a Referer, and are sent in an Authorization header; so streams are read with fetch rather
// than EventSource, which cannot set headers.
"use strict";

const Meridian = (() => {
  const config = window.MERIDIAN_MAP || {};
  // Exposed for people debugging a page and for the browser test.
  const state = { events: 0, vehicle: null, vehicles: {}, status: null, ended: false };
  window.meridianMap = state;

  function param(name) {
    const fragment = new URLSearchParams(location.hash.slice(1));
    return fragment.get(name) || new URLSearchParams(location.search).get(name);
  }

  function newMap() {
    const map = L.map("map", { zoomControl: true, attributionControl: !!config.tileUrl });
    if (config.tileUrl) {
      L.tileLayer(config.tileUrl, { maxZoom: 19, attribution: config.tileAttribution || "" }).addTo(map);
    }
    map.setView([20, 0], 2);
    return map;
  }

  function text(id, value) {
    document.getElementById(id).textContent = value;
  }

  // Reads an SSE body and calls onEvent(name, data) for each event; reconnects after network
  // errors (not after an HTTP refusal, whose problem detail is shown instead).
  async function follow(url, token, onEvent) {
    for (;;) {
      let response;
      try {
        response = await fetch(url, { headers: { Authorization: `Bearer ${token}`, Accept: "text/event-stream" } });
      } catch (e) {
        text("error", "connection lost; retrying…");
        await new Promise((r) => setTimeout(r, 2000));
        continue;
      }
      if (!response.ok) {
        let detail = response.statusText;
        try { detail = (await response.json()).detail; } catch (e) { /* not problem+json */ }
        text("error", detail);
        return response.status;
      }
      text("error", "");
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          let name = "message";
          const data = [];
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) name = line.slice(6).trim();
            else if (line.startsWith("data:")) data.push(line.slice(5).trim());
          }
          if (data.length) {
            if (onEvent(name, JSON.parse(data.join("\n"))) === false) return 200;
          }
        }
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  }

  function customerPage() {
    const parcel = param("parcel");
    const token = param("token");
    if (!parcel || !token) {
      text("error", "This page needs the tracking link from your notification.");
      return;
    }
    const map = newMap();
    let vehicleMarker = null;
    let stopMarker = null;
    const trail = L.polyline([], { color: "#2364aa", weight: 3, opacity: 0.6 }).addTo(map);
    let framed = false;

    function frame() {
      const points = [];
      if (vehicleMarker) points.push(vehicleMarker.getLatLng());
      if (stopMarker) points.push(stopMarker.getLatLng());
      if (points.length === 1) map.setView(points[0], 15);
      if (points.length === 2) map.fitBounds(L.latLngBounds(points).pad(0.4), { maxZoom: 17 });
      framed = points.length === 2;
    }

    follow(`/v1/track/${encodeURIComponent(parcel)}`, token, (name, data) => {
      state.events += 1;
      if (name === "status" || name === "end") {
        state.status = data.status || state.status;
        text("status", (state.status || "").replaceAll("_", " ").toLowerCase());
        text("eta", data.eta ? new Date(data.eta).toLocaleTimeString() : "—");
        if (data.stop && !stopMarker) {
          stopMarker = L.circleMarker([data.stop.lat, data.stop.lng], {
            radius: 9, color: "#1b7f3b", fillColor: "#3fbf6a", fillOpacity: 0.9,
          }).addTo(map).bindTooltip("Your delivery address");
          frame();
        }
        if (name === "end") {
          state.ended = true;
          text("seen", data.reason ? `Tracking ended: ${data.reason}` : "Tracking has ended.");
          return false;
        }
      } else if (name === "vehicle") {
        const at = [data.lat, data.lng];
        state.vehicle = { lat: data.lat, lng: data.lng, recorded_at: data.recorded_at };
        if (!vehicleMarker) {
          vehicleMarker = L.circleMarker(at, {
            radius: 10, color: "#123c69", fillColor: "#2364aa", fillOpacity: 1, className: "vehicle-marker",
          }).addTo(map).bindTooltip("Your delivery vehicle");
        } else {
          vehicleMarker.setLatLng(at);
        }
        trail.addLatLng(at);
        if (!framed) frame();
        text("seen", `Vehicle seen at ${new Date(data.recorded_at).toLocaleTimeString()}`);
      }
      return true;
    });
  }

  function dispatchPage() {
    const token = param("token");
    if (!token) {
      text("error", "Open this page with a dispatcher token: /dispatch#token=…");
      return;
    }
    const map = newMap();
    const markers = {};
    const fences = {};
    const routes = {};
    state.fences = fences;
    state.routes = routes;
    // The view follows what arrives during the first seconds (the initial snapshots), then is
    // left to the dispatcher.
    const framingUntil = Date.now() + 5000;
    let framing = null;

    function frameSoon() {
      if (framing || Date.now() > framingUntil) return;
      framing = setTimeout(() => {
        framing = null;
        const bounds = L.latLngBounds([]);
        for (const m of Object.values(markers)) bounds.extend(m.getLatLng());
        for (const f of Object.values(fences)) bounds.extend(f.getBounds());
        for (const r of Object.values(routes)) bounds.extend(L.featureGroup(r.getLayers()).getBounds());
        // maxZoom: without a tile layer Leaflet has no zoom limit, and one vehicle's bounds
        // (a point) would zoom to infinity (NaN coordinates).
        if (bounds.isValid()) map.fitBounds(bounds.pad(0.2), { maxZoom: 16 });
      }, 200);
    }

    function drawFence(data) {
      if (fences[data.fence_id]) fences[data.fence_id].remove();
      delete fences[data.fence_id];
      if (data.removed || !data.geometry) return;
      const style = { color: "#b5651d", weight: 2, fillOpacity: 0.08, dashArray: "4 4" };
      const layer = data.geometry.type === "Point" && data.radius_m
        ? L.circle([data.geometry.coordinates[1], data.geometry.coordinates[0]], { ...style, radius: data.radius_m })
        : L.geoJSON(data.geometry, { style });
      fences[data.fence_id] = layer.addTo(map).bindTooltip(data.name);
    }

    function drawRoute(data) {
      if (routes[data.route_id]) routes[data.route_id].remove();
      delete routes[data.route_id];
      if (data.removed || !data.stops.length) return;
      const layer = L.layerGroup();
      const path = data.stops.map((s) => [s.lat, s.lng]);
      if (data.position) path.unshift([data.position.lat, data.position.lng]);
      L.polyline(path, { color: "#6c757d", weight: 2, opacity: 0.7 }).addTo(layer);
      for (const stop of data.stops) {
        const done = stop.status !== "pending";
        const eta = stop.eta ? ` · ETA ${new Date(stop.eta).toLocaleTimeString()}` : "";
        L.circleMarker([stop.lat, stop.lng], {
          radius: 4, color: done ? "#1b7f3b" : "#6c757d", fillOpacity: done ? 0.9 : 0.3, weight: 1,
        }).addTo(layer).bindTooltip(`${stop.parcel_id} · ${stop.status}${eta}`);
      }
      routes[data.route_id] = layer.addTo(map);
    }

    follow("/v1/fleet/stream", token, (name, data) => {
      state.events += 1;
      if (name === "geofence") drawFence(data);
      if (name === "route") drawRoute(data);
      text("overlays", `${Object.keys(fences).length} geofences · ${Object.keys(routes).length} routes`);
      frameSoon();
      if (name !== "vehicle") return true;
      if (data.removed) {
        if (markers[data.vehicle_id]) markers[data.vehicle_id].remove();
        delete markers[data.vehicle_id];
        delete state.vehicles[data.vehicle_id];
      } else {
        const at = [data.lat, data.lng];
        state.vehicles[data.vehicle_id] = { lat: data.lat, lng: data.lng, recorded_at: data.recorded_at };
        if (markers[data.vehicle_id]) markers[data.vehicle_id].setLatLng(at);
        else markers[data.vehicle_id] = L.circleMarker(at, {
          radius: 5, color: "#123c69", fillColor: "#2364aa", fillOpacity: 0.9, weight: 1,
        }).addTo(map).bindTooltip(data.vehicle_id);
      }
      const ids = Object.keys(markers);
      text("count", String(ids.length));
      text("seen", `last update ${new Date().toLocaleTimeString()}`);
      return true;
    });
  }

  return { customerPage, dispatchPage };
})();
