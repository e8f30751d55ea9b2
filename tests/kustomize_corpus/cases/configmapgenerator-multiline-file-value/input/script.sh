#!/bin/sh
echo "hello"
  indented line
