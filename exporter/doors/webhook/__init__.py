"""The webhook door: Event Streams' deliveries over HTTP, admitted (intake), verified (signature, source networks), handed to the pipeline."""
