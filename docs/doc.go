// Package docs holds the project's reference documentation as Markdown:
// docs/protocol.md (Sheepdog's wire facts), docs/qemu-client.md (what
// QEMU's driver sends) and docs/design.md (how sheepdog-go is built). Go
// comments across the repository cite their sections by path from the
// repository root, as "docs/protocol.md §4.3"; the tests in this package
// fail when a cited file or section does not exist.
package docs
