// Build the UI into web/dist, which `podflow serve` serves at /. Everything is bundled:
// the page loads nothing from the network but its own server.
import { defineConfig } from "vite";

export default defineConfig({
  base: "./",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    chunkSizeWarningLimit: 900,
  },
  server: {
    // `npm run dev` proxies the API to a running `podflow serve` on port 8080.
    proxy: { "/api": "http://127.0.0.1:8080", "/metrics": "http://127.0.0.1:8080" },
  },
  test: {
    include: ["test/**/*.test.js"],
    environment: "node",
  },
});
