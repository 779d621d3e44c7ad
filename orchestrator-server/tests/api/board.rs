//! The reviewer board over plain HTTP (the browser test drives it in Chromium).
