"""Browser tests: a real ``jupyter lab`` driven by Playwright in the system Chromium."""
