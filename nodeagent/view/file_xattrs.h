// A view entry's extended attributes as the namespace records them
// (Inode.xattrs): read when the recorder records a regular file or a
// directory, compared with the record, and given to the entry the
// materializer places, so that setxattr on one node is getxattr's answer on
// every other, resolved by version as content is. The agent's own marks
// (user.onebox.*) are never read or touched here. Symlinks keep none (Linux
// refuses user.* on them; others stay node-local). An entry's attributes are
// reached through /proc/self/fd/N, so an O_PATH descriptor serves.
#pragma once

#include "onebox/v1/namespace.pb.h"

namespace onebox {

// Replaces inode's xattrs with fd's (none for a symlink or when the file
// system has none). Names the agent may not read (trusted.* when not root)
// are left out.
void ReadXattrs(int fd, v1::Inode* inode);

// Whether a and b record the same extended attributes.
bool SameXattrs(const v1::Inode& a, const v1::Inode& b);

// Whether fd shows inode's extended attributes (one listxattr when neither
// has any).
bool ShowsXattrs(int fd, const v1::Inode& inode);

// Makes fd's extended attributes inode's: sets those that differ, removes
// those inode does not have. Names this agent may not set (trusted.* and
// security.* when not root) are left as they are.
void ApplyXattrs(int fd, const v1::Inode& inode);

}  // namespace onebox
