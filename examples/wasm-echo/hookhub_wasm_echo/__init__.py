"""A WASM connector for Hookhub, written in C (../echo.c): echoes its input."""
