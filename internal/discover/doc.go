// Package discover judges certificates found where they are deployed: on
// TLS endpoints (package discover/tlsscan finds them) and in files
// (package discover/filescan). It knows nothing of networks, files or the
// inventory; it answers three questions about one sighting:
//
//   - where it was seen ([Location], in one canonical text form that the
//     inventory keys sightings by);
//   - what is wrong with it ([Analyzer.Analyze]: expired, weak key, weak
//     signature, self-signed, missing intermediate, name mismatch, a mica
//     certificate on a host its identity does not name, a key file others
//     can read) and who issued it ([Class]: mica, external or self-signed);
//   - who answers for it ([Owners], rules from the config file).
//
// Start with [Sighting] and [Analyzer].
package discover
