"""Example client of mst-dossiers from another platform (Python, grpcio), using only the
published protos: a promoteur creates a brouillon, fills it, deposits it; an instructeur follows
it, passes it en instruction and accepts it. Prints one JSON line per step.

    pip install grpcio==1.85.1 grpcio-tools==1.85.1
    python3 deposit_and_accept.py --forms 127.0.0.1:50051 --instruction 127.0.0.1:50052 \
        --procedure mst-2024-projet --answers answers.json \
        --promoteur-token "$(mstctl token --email marie@example.org --role promoteur)" \
        --instructeur-token "$(mstctl token --email paul@cpam13.example --role instructeur)"

`answers.json` is a list of mst.forms.v1.ChampPatch in the proto3 JSON mapping, e.g.
[{"fieldId": "titre", "set": {"text": "Mois sans tabac au quartier Nord"}}].
"""

import argparse
import json
import sys
import uuid

import mst_protos


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--forms", required=True, help="host:port of the forms service")
    p.add_argument("--instruction", required=True, help="host:port of the instruction service")
    p.add_argument("--procedure", required=True)
    p.add_argument("--answers", required=True, help="JSON file: list of ChampPatch")
    p.add_argument("--promoteur-token", required=True)
    p.add_argument("--instructeur-token", required=True)
    p.add_argument("--motivation", default="Projet conforme au cahier des charges.")
    p.add_argument("--protos", default=mst_protos.DEFAULT_PROTOS)
    args = p.parse_args()

    mst_protos.load(args.protos)
    import grpc
    from google.protobuf import json_format
    from mst.events.v1 import common_pb2
    from mst.forms.v1 import champ_pb2, forms_service_pb2, forms_service_pb2_grpc
    from mst.instruction.v1 import instruction_service_pb2 as ipb
    from mst.instruction.v1 import instruction_service_pb2_grpc

    def step(name, **fields):
        print(json.dumps({"step": name, **fields}, ensure_ascii=False), flush=True)

    promoteur = [("authorization", f"Bearer {args.promoteur_token}")]
    instructeur = [("authorization", f"Bearer {args.instructeur_token}")]
    forms = forms_service_pb2_grpc.FormsServiceStub(grpc.insecure_channel(args.forms))
    instruction = instruction_service_pb2_grpc.InstructionServiceStub(
        grpc.insecure_channel(args.instruction))
    status_name = common_pb2.DossierStatus.Name

    created = forms.CreateDossier(
        forms_service_pb2.CreateDossierRequest(procedure_id=args.procedure, request_id=str(uuid.uuid4())),
        metadata=promoteur).dossier
    step("created", number=created.number, status=status_name(created.status))

    with open(args.answers, encoding="utf-8") as f:
        patches = [json_format.ParseDict(p, champ_pb2.ChampPatch()) for p in json.load(f)]
    saved = forms.UpdateDossier(
        forms_service_pb2.UpdateDossierRequest(number=created.number, expected_version=created.version,
                                         patches=patches),
        metadata=promoteur).dossier
    step("saved", version=saved.version)

    # A stale version is refused, never silently overwritten.
    try:
        forms.UpdateDossier(
            forms_service_pb2.UpdateDossierRequest(number=created.number, expected_version=created.version,
                                             patches=patches[:1]),
            metadata=promoteur)
        step("stale_save", code="OK")
    except grpc.RpcError as e:
        step("stale_save", code=e.code().name)

    deposited = forms.DepositDossier(
        forms_service_pb2.DepositDossierRequest(number=created.number, expected_version=saved.version),
        metadata=promoteur).dossier
    step("deposited", status=status_name(deposited.status))

    n = created.number
    instruction.FollowDossier(ipb.FollowDossierRequest(number=n), metadata=instructeur)
    d = instruction.GetDossier(ipb.GetDossierRequest(number=n), metadata=instructeur).dossier
    d = instruction.PasserEnInstruction(
        ipb.PasserEnInstructionRequest(number=n, expected_version=d.version),
        metadata=instructeur).dossier
    step("en_instruction", status=status_name(d.status))
    d = instruction.Accepter(
        ipb.AccepterRequest(number=n, expected_version=d.version, motivation=args.motivation),
        metadata=instructeur).dossier
    step("accepted", status=status_name(d.status), version=d.version,
         history=[common_pb2.DossierTransition.Name(t.transition) for t in d.traitements])
    return 0


if __name__ == "__main__":
    sys.exit(main())
