"""Recording: a room's FLV output remuxed to fragmented MP4 segments, and their retention."""
