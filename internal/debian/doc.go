// Package debian owns access to Debian archives: picking the host's mirror, fetching a suite's
// InRelease and verifying it against embedded (or configured) archive keys, fetching and
// verifying the Packages index through the signed Release, resolving and downloading packages
// into a content-addressed cache, and extracting files from .deb packages safely. It is pure Go:
// no apt, dpkg or gpg is needed on the host.
package debian
