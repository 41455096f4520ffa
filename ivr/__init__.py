"""The phone call: the flow as a state machine, binding, call state, transfer back, speech,
prompts, TwiML, the call's payment job and the terminal phone. No Flask."""
