"""The phone call: the flow as a state machine, binding, call state, transfer back, speech,
prompts, TwiML, the call's payment job and the terminal phone. No Flask.

Errors:

    ValueError
    └── UnsupportedLanguage (prompts)   no prompt catalog for that language
    PhoneError (phone.py)               the terminal phone met TwiML or a reply it cannot follow
"""
